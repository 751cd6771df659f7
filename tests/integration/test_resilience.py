"""Resilience under load: reloads (good and broken code), recycling, draining on TERM,
kill -9, crash loops, memory bounds, per-IP rate limits, TTIN/TTOU, and an error log that
names the cause of every worker exit.

The app for most tests is written into ``tmp_path`` by :func:`write_app`, so a test can
change its code (a constant, a syntax error, an import that fails) and send porch SIGHUP.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import RawConn, free_port, wait_until

APP_TEMPLATE = '''\
import hashlib
import json
import os
import time
from urllib.parse import parse_qs

VALUE = {value!r}
{extra}
_hoard = []


def application(environ, start_response):
    q = {{k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}}
    path = environ.get("PATH_INFO", "/")
    if path == "/sleep":
        time.sleep(float(q.get("s", "1")))
    elif path == "/hog":
        # Keep the memory: resident (filled, not lazily mapped zero pages) and referenced.
        _hoard.append(b"\\x01" * (int(q.get("mb", "100")) << 20))
    answer = {{"value": VALUE, "pid": os.getpid(), "path": path}}
    if environ["REQUEST_METHOD"] == "POST":
        data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        answer["sha256"] = hashlib.sha256(data).hexdigest()
        answer["length"] = len(data)
    body = json.dumps(answer).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

MODULE = "resilient_app"


def write_app(directory: Path, value: str = "v1", extra: str = "") -> Path:
    """Write (or rewrite) the test app module; ``extra`` is code placed at module level."""
    path = directory / f"{MODULE}.py"
    tmp = directory / f".{MODULE}.tmp"
    tmp.write_text(APP_TEMPLATE.format(value=value, extra=extra))
    os.replace(tmp, path)
    return path


def start_app(porch, tmp_path, *args, value="v1"):
    write_app(tmp_path, value)
    p = porch(*args, "--pythonpath", str(tmp_path), f"{MODULE}:application")
    # The port is bound before the workers have imported the app: wait until it serves,
    # so a test that changes the code afterwards changes it for reloads only.
    assert get_json(p, timeout=30)["value"] == value
    return p


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class Load:
    """``n`` client threads looping on ``path`` until stopped; every outcome is recorded as
    ``(monotonic time, status or exception name, parsed JSON body or None)``.

    With ``body`` > 0 each request is a POST of that many fresh random bytes, and an
    answer whose digest or length is not the one sent counts as a failure ("mixed up")."""

    def __init__(self, url: str, path: str = "/", n: int = 4, source: str | None = None,
                 body: int = 0):
        self.url = url
        self.path = path
        self.body = body
        self.results: list[tuple[float, object, dict | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]

    def _loop(self):
        s = requests.Session()
        while not self._stop.is_set():
            try:
                if self.body:
                    data = os.urandom(self.body)
                    r = s.post(self.url + self.path, data=data, timeout=15)
                else:
                    r = s.get(self.url + self.path, timeout=15)
                body = None
                if r.status_code == 200:
                    try:
                        body = r.json()
                    except ValueError:
                        body = {"raw": r.text}
                status = r.status_code
                if self.body and status == 200 and (
                        body.get("sha256") != hashlib.sha256(data).hexdigest()
                        or body.get("length") != self.body):
                    status = "mixed up"
                outcome = (time.monotonic(), status, body)
            except requests.RequestException as e:
                outcome = (time.monotonic(), type(e).__name__, None)
                s = requests.Session()
            with self._lock:
                self.results.append(outcome)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(20)

    def failures(self):
        return [(round(t, 3), s) for t, s, _ in self.results if s != 200]

    def ok(self):
        return [b for _, s, b in self.results if s == 200]


def get_json(p, path="/", timeout=10):
    r = requests.get(p.url + path, timeout=timeout)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def exit_lines(log: str, pid: int) -> list[str]:
    return [line for line in log.splitlines() if f"worker {pid} " in line and
            ("exited" in line or "died" in line)]


# --- SIGHUP reload --------------------------------------------------------------------


# Requests with bodies larger than the worker socket's buffer reach the worker over
# several writes: each must arrive whole and with its own answer through every transition.
BODIES = pytest.mark.parametrize("body", [0, 300_000], ids=["get", "post-300k"])


@BODIES
def test_reload_under_load_drops_nothing_and_serves_the_new_code(porch, tmp_path, body):
    p = start_app(porch, tmp_path, "-w", "2")
    assert wait_until(lambda: len(p.worker_pids()) == 2, 5), p.worker_pids()
    old = set(p.worker_pids())
    assert get_json(p)["value"] == "v1"
    with Load(p.url, "/sleep?s=0.01", n=4, body=body) as load:
        time.sleep(1.5)
        write_app(tmp_path, "v2")
        hup_at = time.monotonic()
        p.signal(signal.SIGHUP)
        time.sleep(2.5)
    failures = load.failures()
    assert failures == [], f"{len(failures)} of {len(load.results)} requests failed: {failures[:10]}"
    values = [b["value"] for b in load.ok()]
    assert len(values) >= 40, f"too little load to mean anything: {len(values)} requests"
    assert "v1" in values and "v2" in values, sorted(set(values))
    # Once v2 is served, v1 never comes back (old workers drained, not interleaved forever).
    last_v1 = max(t for t, s, b in load.results if s == 200 and b["value"] == "v1")
    first_v2 = min(t for t, s, b in load.results if s == 200 and b["value"] == "v2")
    assert first_v2 > hup_at
    assert last_v1 < first_v2 + 2.0, "old workers kept serving long after the reload"
    new = set(p.worker_pids())
    assert len(new) == 2 and not (new & old), f"worker pids before {old}, after {new}"
    assert {get_json(p)["value"] for _ in range(6)} == {"v2"}
    assert wait_until(lambda: not any(alive(w) for w in old), 10), "old workers still alive"
    log = p.log()
    for pid in old:
        assert any("reloaded" in line for line in exit_lines(log, pid)), \
            f"no 'reloaded' exit line for worker {pid}:\n{log[-3000:]}"
    assert p.proc.poll() is None


def test_failed_reload_keeps_the_old_workers_serving(porch, tmp_path):
    p = start_app(porch, tmp_path, "-w", "2")
    assert wait_until(lambda: len(p.worker_pids()) == 2, 5), p.worker_pids()
    old = set(p.worker_pids())
    write_app(tmp_path, "v-broken", extra="def broken(:\n    pass\n")
    with Load(p.url, "/", n=2) as load:
        time.sleep(0.3)
        p.signal(signal.SIGHUP)
        # The replacements import the broken module and fail; the traceback is logged.
        logged = wait_until(lambda: "SyntaxError" in p.log() and
                            p.log().count("failed to start") >= 2, 15)
        time.sleep(0.5)
    log = p.log()
    assert logged, f"no SyntaxError traceback and failed start in the log:\n{log[-3000:]}"
    assert f"{MODULE}.py" in log, "the traceback does not name the broken file"
    assert load.failures() == [], load.failures()[:10]
    assert {b["value"] for b in load.ok()} == {"v1"}
    assert {b["pid"] for b in load.ok()} <= old
    assert p.proc.poll() is None, "porch exited after a failed reload"
    assert set(p.worker_pids()) == old, "the old workers did not stay"
    # Fixed code and a second HUP: the new code is served by new workers.
    write_app(tmp_path, "v3")
    p.signal(signal.SIGHUP)
    assert wait_until(lambda: get_json(p)["value"] == "v3", 15), p.log()[-3000:]
    assert wait_until(lambda: set(p.worker_pids()).isdisjoint(old)
                      and len(p.worker_pids()) == 2, 10), (old, p.worker_pids())
    assert {get_json(p)["value"] for _ in range(6)} == {"v3"}


# --- recycling ------------------------------------------------------------------------


@BODIES
def test_max_requests_recycling_under_concurrent_load_fails_nothing(porch, tmp_path, body):
    # test_supervision covers one sequential client; here 4 clients keep both workers
    # busy (with requests sent ahead) while they are recycled.
    p = start_app(porch, tmp_path, "-w", "2", "--max-requests", "50")
    with Load(p.url, "/sleep?s=0.005", n=4, body=body) as load:
        time.sleep(4)
    failures = load.failures()
    assert failures == [], f"{len(failures)} of {len(load.results)} failed: {failures[:10]}"
    served = len(load.ok())
    pids = {b["pid"] for b in load.ok()}
    assert served >= 200, f"only {served} requests: not enough to recycle"
    # every worker serves at most ~50 requests (a few more while its successor boots)
    assert len(pids) >= served // 100, (served, sorted(pids))
    assert p.log().count("exited: recycled after max requests") >= 2, p.log()[-3000:]


# --- TERM -----------------------------------------------------------------------------


def _health(conn: RawConn) -> int | str:
    """GET /healthz on a kept-alive admin connection: the status, or 'closed'."""
    try:
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        return conn.read_response(timeout=2).status
    except (OSError, TimeoutError, Exception) as e:  # noqa: BLE001
        if isinstance(e, AssertionError):
            raise
        return "closed"


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_term_under_load_answers_every_accepted_request(porch, tmp_path):
    admin = free_port()
    p = start_app(porch, tmp_path, "-w", "2", "--threads", "2",
                  "--admin-bind", f"127.0.0.1:{admin}")
    # (the app port is bound before the workers have booted; /healthz says when they have)
    assert wait_until(lambda: requests.get(f"http://127.0.0.1:{admin}/healthz",
                                           timeout=5).status_code == 200, 10)
    health = RawConn(admin)
    assert _health(health) == 200
    n = 8  # 4 run at once, 4 wait: the drain takes ~3 s
    results: dict[int, object] = {}

    def one(i):
        try:
            r = requests.get(p.url + "/sleep?s=1.5", timeout=30)
            results[i] = (r.status_code, r.json()["path"])
        except requests.RequestException as e:
            results[i] = repr(e)

    def requests_seen():
        m = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).text
        return int(re.search(r"^porch_requests_total (\d+)", m, re.M).group(1))

    before = requests_seen()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    # every request has been read by porch (accepted) before TERM
    assert wait_until(lambda: requests_seen() >= before + n, 5), (before, requests_seen())
    p.signal(signal.SIGTERM)
    # Order: from the moment the app port stops accepting, /healthz is already unready.
    samples = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        accepting = _accepts(p.port)
        h = _health(health) if health is not None else "closed"
        if h == "closed":
            health = None
        samples.append((accepting, h))
        if not accepting and h != 200:
            break
    assert any(not a for a, _ in samples), f"the app port still accepted 3 s after TERM: {samples[-5:]}"
    assert not [s for s in samples if not s[0] and s[1] == 200], \
        f"/healthz said ready after the app port closed: {samples}"
    assert samples[-1][1] in (503, "closed"), samples[-5:]
    # drain still running: some requests are unanswered, and new connections are refused
    assert len(results) < n, f"all {n} requests already done; nothing was drained: {results}"
    assert not _accepts(p.port), "a new connection was accepted during the drain"
    new_health = None
    try:
        new_health = requests.get(f"http://127.0.0.1:{admin}/healthz", timeout=2).status_code
    except requests.RequestException:
        pass
    assert new_health in (None, 503), f"/healthz answered {new_health} during the drain"
    for t in ts:
        t.join(30)
    assert results == {i: (200, "/sleep") for i in range(n)}, results
    assert p.wait(20) == 0, p.log()[-3000:]


# --- kill -9 ----------------------------------------------------------------------------


@BODIES
def test_kill_9_under_load_costs_one_request_and_a_new_worker_answers_within_a_second(
        porch, tmp_path, body):
    p = start_app(porch, tmp_path, "-w", "2")
    assert wait_until(lambda: len(p.worker_pids()) == 2, 5), p.worker_pids()
    before = set(p.worker_pids())
    victim = min(before)
    with Load(p.url, "/sleep?s=0.02", n=4, body=body) as load:
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        time.sleep(2.0)
    new_answers = [t for t, s, b in load.results if s == 200 and b["pid"] not in before]
    assert new_answers, f"no answer from a new worker within 2 s; pids now {p.worker_pids()}"
    took = min(new_answers) - killed_at
    assert took < 1.0, f"the new worker first answered {took:.2f} s after the kill"
    failures = load.failures()
    assert len(failures) <= 1 and all(s == 502 for _, s in failures), failures
    assert len(load.ok()) >= 50, len(load.ok())
    lines = exit_lines(p.log(), victim)
    assert any("killed by signal 9" in line for line in lines), \
        f"no 'killed by signal 9' for worker {victim}:\n{p.log()[-3000:]}"


def test_worker_death_is_logged_with_the_request_it_was_running(porch, tmp_path):
    p = start_app(porch, tmp_path, "-w", "1")
    pid = get_json(p)["pid"]
    out = {}
    t = threading.Thread(target=lambda: out.setdefault(
        "status", requests.get(p.url + "/sleep?s=5&tag=victim-request", timeout=20).status_code))
    t.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    t.join(20)
    assert out.get("status") == 502
    assert wait_until(lambda: exit_lines(p.log(), pid), 5)
    log = p.log()
    lines = [line for line in log.splitlines() if f"worker {pid}" in line]
    assert any("victim-request" in line for line in lines), \
        "no log line names both the dead worker and the request it was running:\n" + "\n".join(lines)


# --- crash loop -----------------------------------------------------------------------


def test_crash_loop_backs_off_and_recovers(porch, tmp_path):
    p = start_app(porch, tmp_path, "-w", "1")
    pid = get_json(p)["pid"]
    # From now on the module fails to import; the worker dies and cannot be replaced.
    write_app(tmp_path, "v-broken", extra='raise RuntimeError("import broken on purpose")\n')
    os.kill(pid, signal.SIGKILL)
    time.sleep(3.0)
    log = p.log()
    attempts = log.count("import broken on purpose")
    retries = [float(x) for x in re.findall(r"retrying in ([\d.]+)s", log)]
    assert p.proc.poll() is None, "porch gave up instead of retrying"
    assert 2 <= attempts < 10, f"{attempts} boot attempts in 3 s:\n{log[-3000:]}"
    assert len(retries) >= 2, log[-3000:]
    assert all(b >= a for a, b in zip(retries, retries[1:])) and retries[-1] > retries[0], retries
    # Fixed code: the next retry boots and serves it.
    write_app(tmp_path, "v-fixed")
    assert wait_until(lambda: _value_or_none(p) == "v-fixed", 15, 0.2), p.log()[-3000:]


def _value_or_none(p):
    try:
        r = requests.get(p.url + "/", timeout=2)
        return r.json()["value"] if r.status_code == 200 else None
    except requests.RequestException:
        return None


# --- memory -------------------------------------------------------------------------------


def test_max_worker_memory_replaces_the_worker_after_its_request(porch, tmp_path):
    p = start_app(porch, tmp_path, "-w", "1", "--max-worker-memory", "60")
    pid = get_json(p)["pid"]
    time.sleep(1.5)
    assert get_json(p)["pid"] == pid, "a fresh worker is already over 60 MiB"
    r = requests.get(p.url + "/hog?mb=100", timeout=20)
    assert r.status_code == 200 and r.json()["pid"] == pid
    with Load(p.url, "/sleep?s=0.01", n=2) as load:
        replaced = wait_until(lambda: any(b["pid"] != pid for b in load.ok()), 8)
        time.sleep(0.5)
    assert replaced, f"worker {pid} was not replaced:\n{p.log()[-3000:]}"
    assert load.failures() == [], load.failures()[:10]
    assert wait_until(lambda: not alive(pid), 10)
    log = p.log()
    assert "max-worker-memory" in "\n".join(exit_lines(log, pid)), log[-3000:]
    assert re.search(rf"worker {pid} uses \d+ MiB", log), log[-3000:]


# --- rate limit ---------------------------------------------------------------------------


def _get_from(source: str, port: int, path: str = "/", headers=None) -> http.client.HTTPResponse:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        r.read()
        return r
    finally:
        c.close()


def test_rate_limit_turns_a_flood_into_429_while_another_ip_is_served(porch, tmp_path):
    p = start_app(porch, tmp_path, "-w", "1", "--limit-rate", "5", "--limit-burst", "5")
    started = time.monotonic()
    statuses, retry_after = [], []
    for _ in range(40):
        r = _get_from("127.0.0.1", p.port)
        statuses.append(r.status)
        if r.status == 429:
            retry_after.append(r.getheader("Retry-After"))
    elapsed = time.monotonic() - started
    ok = statuses.count(200)
    assert statuses.count(429) >= 20, statuses
    assert set(statuses) <= {200, 429}, statuses
    # the bucket: the burst (less the one request start_app made) plus what refills
    # during the flood, never more
    assert 4 <= ok <= 5 + 5 * elapsed + 1, (ok, elapsed, statuses)
    assert all(v is not None and v.isdigit() and int(v) >= 1 for v in retry_after), retry_after
    # another client address is served while 127.0.0.1 is still limited
    other = [_get_from("127.0.0.2", p.port).status for _ in range(3)]
    assert other == [200, 200, 200], other
    assert _get_from("127.0.0.1", p.port).status == 429


def test_untrusted_client_cannot_escape_the_rate_limit_with_x_forwarded_for(porch, tmp_path):
    p = start_app(porch, tmp_path, "-w", "1", "--limit-rate", "5", "--limit-burst", "5")
    statuses = [
        _get_from("127.0.0.3", p.port, headers={"X-Forwarded-For": f"10.9.{i}.{i}"}).status
        for i in range(30)
    ]
    assert statuses.count(429) >= 15, statuses


# --- TTIN / TTOU --------------------------------------------------------------------------


def test_ttin_adds_and_ttou_removes_a_worker(porch, tmp_path):
    p = start_app(porch, tmp_path, "-w", "2")
    assert wait_until(lambda: len(p.worker_pids()) == 2, 5), p.worker_pids()
    with Load(p.url, "/sleep?s=0.01", n=3) as load:
        p.signal(signal.SIGTTIN)
        assert wait_until(lambda: len(p.worker_pids()) == 3, 10), p.worker_pids()
        p.signal(signal.SIGTTIN)
        assert wait_until(lambda: len(p.worker_pids()) == 4, 10), p.worker_pids()
        four = set(p.worker_pids())
        time.sleep(0.5)
        p.signal(signal.SIGTTOU)
        assert wait_until(lambda: len(p.worker_pids()) == 3, 10), p.worker_pids()
        p.signal(signal.SIGTTOU)
        assert wait_until(lambda: len(p.worker_pids()) == 2, 10), p.worker_pids()
        time.sleep(0.5)
    assert load.failures() == [], load.failures()[:10]
    assert set(p.worker_pids()) <= four
    served_by = {b["pid"] for b in load.ok()}
    assert len(served_by & four) >= 3, "the added workers never served"
    # the last worker is kept
    p.signal(signal.SIGTTOU)
    p.signal(signal.SIGTTOU)
    time.sleep(1.0)
    assert len(p.worker_pids()) == 1, p.worker_pids()
    p.signal(signal.SIGTTOU)
    time.sleep(0.5)
    assert len(p.worker_pids()) == 1, p.worker_pids()
    assert get_json(p)["value"] == "v1"


# --- exit causes ----------------------------------------------------------------------------


def test_error_log_names_the_cause_of_every_worker_exit(porch, tmp_path):
    p = start_app(porch, tmp_path, "-w", "1", "--timeout", "2", "--max-requests", "5")

    def current():
        try:
            return get_json(p)["pid"]
        except requests.RequestException as e:
            pytest.fail(f"no answer after a worker exit ({e!r}); workers {p.worker_pids()}; "
                        f"log:\n{p.log()[-5000:]}")

    # recycled: 5 requests
    a = current()
    for _ in range(6):
        get_json(p)
    assert wait_until(lambda: exit_lines(p.log(), a), 10), p.log()[-3000:]
    # timeout
    b = current()
    assert b != a
    assert requests.get(p.url + "/sleep?s=30", timeout=20).status_code == 504
    assert wait_until(lambda: exit_lines(p.log(), b), 10), p.log()[-3000:]
    # killed by a signal
    c = current()
    os.kill(c, signal.SIGKILL)
    assert wait_until(lambda: exit_lines(p.log(), c), 10), p.log()[-3000:]
    # reloaded
    d = current()
    p.signal(signal.SIGHUP)
    assert wait_until(lambda: exit_lines(p.log(), d), 10), p.log()[-3000:]
    log = p.log()
    causes = {
        a: "recycled",
        b: "timed out",
        c: "killed by signal 9",
        d: "reloaded",
    }
    for pid, cause in causes.items():
        lines = exit_lines(log, pid)
        assert any(cause in line for line in lines), f"worker {pid}: expected {cause!r} in {lines}"


# --- signals while the workers are still importing the app -----------------------------------


def test_signals_during_startup_are_neither_fatal_nor_lost(porch):
    """slow_import takes 1.5 s to import: a HUP in that window must not kill porch (the
    default action of SIGHUP) and a TTIN must still add its worker once porch serves."""
    p = porch("-w", "1", "slow_import:application")  # returns once the port is bound
    time.sleep(0.3)
    p.signal(signal.SIGHUP)
    p.signal(signal.SIGTTIN)
    r = requests.get(p.url + "/", timeout=20)
    assert p.proc.poll() is None, f"porch exited with {p.proc.returncode} after HUP at start-up"
    assert r.status_code == 200 and r.text == "imported slowly"
    assert wait_until(lambda: len(p.worker_pids()) == 2, 15), p.worker_pids()


def test_term_during_startup_stops_porch_and_its_booting_workers(porch):
    p = porch("-w", "2", "slow_import:application")
    assert wait_until(lambda: len(p.worker_pids()) == 2, 5), p.worker_pids()
    workers = p.worker_pids()
    p.signal(signal.SIGTERM)
    assert p.wait(10) == 0, p.log()[-2000:]
    assert wait_until(lambda: not any(alive(w) for w in workers), 5), "booting workers outlived porch"


# --- no worker can start ---------------------------------------------------------------------


def test_term_during_a_crash_loop_stops_promptly(porch, tmp_path):
    p = start_app(porch, tmp_path, "-w", "1", "--graceful-timeout", "20")
    pid = get_json(p)["pid"]
    write_app(tmp_path, "v-broken", extra='raise RuntimeError("import broken on purpose")\n')
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: "retrying in" in p.log(), 5), p.log()[-3000:]
    started = time.monotonic()
    p.signal(signal.SIGTERM)
    try:
        code = p.wait(15)
    except Exception:  # noqa: BLE001
        pytest.fail(f"porch still running 15 s after TERM during a crash loop:\n{p.log()[-3000:]}")
    assert code == 0
    assert time.monotonic() - started < 5, "TERM waited for the graceful timeout with nothing to drain"


def test_workers_still_start_after_the_binary_is_replaced_on_disk(porch, tmp_path, monkeypatch):
    """An upgrade in place (a package manager, a deploy, a rebuild) renames a new file over
    porch's binary while it runs: replacements for dead workers must still start."""
    import shutil

    import conftest

    exe = tmp_path / "bin" / "porch"
    exe.parent.mkdir()
    shutil.copy2(conftest.PORCH_BIN, exe)
    # As in a venv's bin/: the workers' python3 beside porch.
    beside = exe.with_name("python3")
    beside.write_text(f'#!/bin/sh\nexec {conftest.PORCH_BIN.parent / "python"} "$@"\n')
    beside.chmod(0o755)
    monkeypatch.setattr(conftest, "PORCH_BIN", exe)
    p = start_app(porch, tmp_path, "-w", "1")
    pid = get_json(p)["pid"]
    new = exe.with_name("porch.new")
    shutil.copy2(exe, new)
    os.replace(new, exe)  # the running binary's file is now a different inode
    os.kill(pid, signal.SIGKILL)
    # A request racing with the kill may be handed to the dying worker and get its 502
    # (the cost of the in-flight request); the next one must find a new worker.
    r = None
    for _ in range(2):
        try:
            r = requests.get(p.url + "/", timeout=5)
        except requests.RequestException:
            r = None
        if r is not None and r.status_code == 200:
            break
    assert r is not None and r.status_code == 200 and r.json()["pid"] != pid, \
        f"no new worker after the binary was replaced:\n{p.log()[-3000:]}"
