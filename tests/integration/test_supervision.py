"""Workers under supervision: crashes, kill -9 under load, hung requests (504), threads,
max-requests recycling, graceful and fast stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import PORCH_BIN, wait_until


def get(p, path, timeout=10, **kw):
    return requests.get(p.url + path, timeout=timeout, **kw)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _policies(pid: int) -> set[int]:
    """The scheduling policy of every thread of a process."""
    return {os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def test_the_front_runs_under_batch_scheduling_and_its_workers_do_not(porch, tmp_path):
    """The front's threads are SCHED_BATCH (their wake-ups do not preempt a worker's
    Python on a shared core); the workers run under the normal policy. `batch_scheduling =
    false` leaves the front normal too."""
    p = porch("-w", "2", "--threads", "2", "wsgiapp:application")
    assert wait_until(lambda: len(p.worker_pids()) == 2, 10), p.worker_pids()
    assert get(p, "/say?text=x").text == "x"
    assert _policies(p.proc.pid) == {os.SCHED_BATCH}
    for pid in p.worker_pids():
        assert _policies(pid) == {os.SCHED_OTHER}, pid
    cfg = tmp_path / "porch.toml"
    cfg.write_text("batch_scheduling = false\n")
    q = porch("-c", cfg, "-w", "1", "wsgiapp:application")
    assert wait_until(lambda: len(q.worker_pids()) == 1, 10), q.worker_pids()
    assert _policies(q.proc.pid) == {os.SCHED_OTHER}
    assert _policies(q.worker_pids()[0]) == {os.SCHED_OTHER}


def test_workers_are_the_python_beside_porch_running_porch_worker(porch):
    p = porch("-w", "2", "wsgiapp:application")
    assert wait_until(lambda: len(p.worker_pids()) == 2, 5), p.worker_pids()
    python = os.path.realpath(PORCH_BIN.parent / "python3")
    for pid in p.worker_pids():
        assert os.path.realpath(f"/proc/{pid}/exe") == python
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        assert argv[1:3] == [b"-m", b"porch.worker"], argv


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_worker_that_dies_mid_request_gives_502_and_is_replaced(porch, how):
    p = porch("-w", "1", "wsgiapp:application")
    [old] = p.worker_pids()
    r = get(p, f"/crash?how={how}")
    assert r.status_code == 502
    # the next request is served (by a new worker)
    r = get(p, "/pid")
    assert r.status_code == 200
    assert r.json()["pid"] != old
    assert wait_until(lambda: not alive(old), 5)


def test_kill_9_under_a_client_loop_costs_only_the_in_flight_request(porch):
    p = porch("-w", "2", "wsgiapp:application")
    assert wait_until(lambda: len(p.worker_pids()) == 2, 5), p.worker_pids()
    before = set(p.worker_pids())
    results: list = []
    stop = threading.Event()

    def loop():
        s = requests.Session()
        while not stop.is_set():
            try:
                r = s.get(p.url + "/sleep?s=0.02", timeout=10)
                results.append(r.status_code)
            except requests.RequestException as e:
                results.append(type(e).__name__)
                s = requests.Session()

    clients = [threading.Thread(target=loop) for _ in range(4)]
    for t in clients:
        t.start()
    try:
        time.sleep(1.0)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        replaced = wait_until(lambda: len(set(p.worker_pids()) - before) == 1
                              and len(p.worker_pids()) == 2, 5)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in clients:
            t.join(15)
    assert replaced, f"no new worker after kill -9: {p.worker_pids()} (before {before})"
    failures = [x for x in results if x != 200]
    ok = results.count(200)
    assert ok >= 20, results
    assert len(failures) <= 2, f"{len(failures)} failed requests out of {len(results)}: {failures}"
    assert all(f == 502 for f in failures), failures


@pytest.mark.parametrize(
    "kind, threads, frame",
    [("sleep", 1, "hung_in_sleep_here"), ("spin", 1, "spin_forever_here"),
     ("sleep", 4, "hung_in_sleep_here")],
    ids=["sleep", "busy-loop", "sleep-with-threads"],
)
def test_hung_request_gets_504_with_stack_in_log_and_worker_replaced(porch, kind, threads, frame):
    p = porch("-w", "1", "--threads", str(threads), "--timeout", "2", "wsgiapp:application")
    old = get(p, "/pid").json()["pid"]
    side = {}

    def side_request():
        time.sleep(0.5)
        side["status"] = get(p, "/say?text=side").status_code

    t = threading.Thread(target=side_request)
    if threads > 1:
        t.start()
    started = time.monotonic()
    r = get(p, f"/{kind}?s=60", timeout=20)
    elapsed = time.monotonic() - started
    assert r.status_code == 504
    assert 1.5 <= elapsed < 12, elapsed
    if threads > 1:
        t.join(10)
        assert side.get("status") == 200, "other threads of the worker kept serving"
    log = p.log()
    assert wait_until(lambda: frame in p.log(), 5), f"no Python stack with {frame} in:\n{log[-3000:]}"
    assert f"/{kind}?s=60" in p.log(), "the request line is not in the log"
    assert wait_until(lambda: not alive(old), 10), "the stuck worker was not killed"
    r = get(p, "/pid")
    assert r.status_code == 200 and r.json()["pid"] != old


def test_threads_run_requests_concurrently(porch):
    p = porch("-w", "1", "--threads", "4", "wsgiapp:application")
    results = []

    def one():
        r = get(p, "/barrier?name=four&n=4&timeout=5")
        results.append((r.status_code, r.json() if r.status_code == 200 else r.text))

    ts = [threading.Thread(target=one) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(15)
    assert [s for s, _ in results] == [200] * 4, results
    assert len({d["pid"] for _, d in results}) == 1
    assert len({d["thread"] for _, d in results}) == 4


def test_one_thread_runs_one_request_at_a_time(porch):
    p = porch("-w", "1", "--threads", "1", "wsgiapp:application")
    results = []

    def one():
        results.append(get(p, "/barrier?name=two&n=2&timeout=1").status_code)

    ts = [threading.Thread(target=one) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(15)
    assert 500 in results, results


@pytest.mark.parametrize("jitter", [None, 5], ids=["no-jitter", "jitter"])
def test_max_requests_recycles_workers_without_failing_a_request(porch, jitter):
    args = ["-w", "2", "--max-requests", "20"]
    if jitter:
        args += ["--max-requests-jitter", str(jitter)]
    p = porch(*args, "wsgiapp:application")
    pids, failures = [], []
    s = requests.Session()
    for _ in range(200):
        try:
            r = s.get(p.url + "/pid?sleep=0.01", timeout=10)
            if r.status_code == 200:
                pids.append(r.json()["pid"])
            else:
                failures.append(r.status_code)
        except requests.RequestException as e:
            failures.append(repr(e))
            s = requests.Session()
    assert failures == [], f"{len(failures)} failed: {failures[:5]}"
    # 200 requests at >= 10 ms each, 20 per worker: many recycles (a worker may serve a few
    # more requests than --max-requests while its successor boots)
    assert len(set(pids)) >= 4, f"workers were not recycled: {sorted(set(pids))}"
    # and it still stops cleanly right after all that recycling
    p.signal(signal.SIGTERM)
    try:
        assert p.wait(10) == 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"porch did not exit within 10 s of TERM after recycling:\n{p.log()[-3000:]}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_graceful_stop_drains_in_flight_requests_and_exits_0(porch, tmp_path, sig):
    p = porch("-w", "2", "--threads", "2", "wsgiapp:application")
    assert wait_until(lambda: len(p.worker_pids()) == 2, 5), p.worker_pids()
    workers = p.worker_pids()
    results = {}
    markers = [tmp_path / f"m{i}" for i in range(3)]

    def one(i):
        try:
            r = get(p, f"/sleep?s=1.5&marker={markers[i]}", timeout=20)
            results[i] = (r.status_code, r.text)
        except requests.RequestException as e:
            results[i] = repr(e)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    assert wait_until(lambda: all(m.exists() for m in markers), 5), "requests never reached the app"
    p.signal(sig)
    for t in ts:
        t.join(20)
    assert results == {i: (200, "slept") for i in range(3)}
    assert p.wait(20) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p.port), timeout=0.5).close()
    assert wait_until(lambda: not any(alive(w) for w in workers), 5), "workers outlived porch"


def test_graceful_timeout_bounds_the_drain(porch, tmp_path):
    p = porch("-w", "1", "--graceful-timeout", "1", "wsgiapp:application")
    marker = tmp_path / "m"
    t = threading.Thread(target=lambda: _swallow(lambda: get(p, f"/sleep?s=60&marker={marker}", 30)))
    t.start()
    assert wait_until(marker.exists, 5)
    started = time.monotonic()
    p.signal(signal.SIGTERM)
    p.wait(15)
    assert time.monotonic() - started < 8
    t.join(30)


def test_quit_stops_at_once(porch, tmp_path):
    p = porch("-w", "1", "wsgiapp:application")
    workers = p.worker_pids()
    marker = tmp_path / "m"
    t = threading.Thread(target=lambda: _swallow(lambda: get(p, f"/sleep?s=60&marker={marker}", 30)))
    t.start()
    assert wait_until(marker.exists, 5)
    started = time.monotonic()
    p.signal(signal.SIGQUIT)
    p.wait(15)
    assert time.monotonic() - started < 4
    assert wait_until(lambda: not any(alive(w) for w in workers), 5), "workers outlived porch"
    t.join(30)


def _swallow(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001
        pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_to_the_whole_process_group_answers_every_accepted_request(porch, sig):
    """systemd's KillMode=control-group and Ctrl-C in a terminal signal every process of the
    group: the workers finish what they run and wait for the front's word, the front drains."""
    p = porch("-w", "2", "--graceful-timeout", "10", "wsgiapp:application")
    results = []

    def one():
        try:
            results.append(requests.get(p.url + "/sleep?s=1.5", timeout=30).status_code)
        except requests.RequestException as e:
            results.append(type(e).__name__)

    clients = [threading.Thread(target=one) for _ in range(4)]
    for t in clients:
        t.start()
    time.sleep(0.5)  # all four accepted: two running, two queued
    os.killpg(p.proc.pid, sig)
    for t in clients:
        t.join(30)
    assert results == [200] * 4, f"{results}\n{p.log()[-3000:]}"
    assert p.wait(30) == 0, p.log()[-3000:]
    assert "killed by signal" not in p.log(), p.log()[-3000:]
