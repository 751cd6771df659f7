"""ASGI apps in porch's workers: the scope, streaming (SSE), lifespan, errors, timeouts,
supervision, and real frameworks (Starlette, FastAPI, Django's ASGI handler)."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys
import threading
import time

import pytest
import requests

from conftest import ConnectionEnded, RawConn, raw_request, run_porch, wait_until

if sys.prefix == sys.base_prefix:
    pytest.skip("run the tests from the test virtualenv (scripts/test does)", allow_module_level=True)
VENV = ["--venv", sys.prefix]


def get(p, path, timeout=10, **kw):
    return requests.get(p.url + path, timeout=timeout, **kw)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.fixture(scope="module")
def asgi(porch_module):
    """One worker, so requests that must meet (SSE and its release) share a loop."""
    return porch_module("-w", "1", *VENV, "asgi_app:app")


# --- the scope ------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_scope_is_built_like_the_environ(porch, loop):
    p = porch("-w", "1", "--loop", loop, *VENV, "asgi_app:app")
    assert wait_until(lambda: "(ASGI, 100 requests at once)" in p.log(), 20), p.log()
    r = get(p, "/scope/a%20b/%C3%A9?x=1&y=%20", headers={"X-Custom": "Value"})
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["type"] == "http"
    assert s["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert s["http_version"] == "1.1" and s["method"] == "GET" and s["scheme"] == "http"
    assert s["path"] == "/scope/a b/é"
    assert s["raw_path"] == "/scope/a%20b/%C3%A9"
    assert s["query_string"] == "x=1&y=%20"
    assert s["root_path"] == ""
    assert ["x-custom", "Value"] in s["headers"]
    assert ["host", f"127.0.0.1:{p.port}"] in s["headers"]
    assert s["client"][0] == "127.0.0.1"
    assert s["server"] == ["127.0.0.1", p.port]
    assert s["state"] == {"started_by": s["pid"]}, "lifespan state reaches request scopes"
    assert s["loop"] == loop


def test_scope_path_is_only_the_path(asgi):
    # Other paths hit the 404 route, which echoes the decoded path.
    r = get(asgi, "/x/%2F/y?q")
    assert r.status_code == 404 and r.json()["path"] == "/x///y"


def test_script_name_becomes_root_path(porch):
    p = porch("-w", "1", *VENV, "asgi_app:app", env={"SCRIPT_NAME": "/mount"})
    s = get(p, "/mount/scope").json()
    assert s["root_path"] == "/mount" and s["path"] == "/mount/scope"


@pytest.mark.parametrize("size", [0, 5, 3 * 1024 * 1024 + 7], ids=["empty", "small", "spilled"])
def test_request_bodies_arrive_as_http_request_events(asgi, size):
    data = os.urandom(size)
    r = requests.post(asgi.url + "/scope", data=data, timeout=30)
    s = r.json()
    assert s["body_len"] == size and s["body_sha256"] == hashlib.sha256(data).hexdigest()
    if size > 2 * 1024 * 1024:
        assert s["body_events"] > 1, "a large body comes in several http.request events"


def test_chunked_upload_is_one_body(asgi):
    def pieces():
        yield b"abc"
        yield b"def"

    s = requests.post(asgi.url + "/scope", data=pieces(), timeout=10).json()
    assert s["body_len"] == 6


def test_response_headers_and_status_pass_through(asgi):
    r = get(asgi, "/headers")
    assert r.status_code == 201 and r.text == "made"
    assert r.headers["x-one"] == "1"
    assert sorted(r.raw.headers.getlist("set-cookie")) == ["a=1", "b=2"]


def test_pathsend_sends_the_file(asgi):
    r = get(asgi, "/pathsend")
    here = os.path.join(os.path.dirname(__file__), "..", "apps", "asgi_app.py")
    with open(here, "rb") as f:
        assert r.status_code == 200 and r.content == f.read()


# --- streaming ------------------------------------------------------------------------------------


def test_server_sent_events_reach_the_client_before_the_app_finishes(asgi):
    with RawConn(asgi.port, timeout=10) as c:
        c.send(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        _, status, _, _ = c.read_head()
        assert status == 200
        # The app waits for /release before it sends more or ends: the first event must
        # already be here.
        got = c.buf
        deadline = time.monotonic() + 10
        while b"data: first" not in got and time.monotonic() < deadline:
            got += c.sock.recv(4096)
        assert b"data: first\n\n" in got
        assert b"data: second" not in got
        assert get(asgi, "/release").json() == {"released": True}
        while not got.endswith(b"0\r\n\r\n") and time.monotonic() < deadline:
            chunk = c.sock.recv(4096)
            if not chunk:
                break
            got += chunk
        assert b"data: second\n\n" in got and got.endswith(b"0\r\n\r\n"), got


def test_a_client_that_leaves_a_stream_is_reported_to_the_app(asgi):
    with socket.create_connection(("127.0.0.1", asgi.port), timeout=5) as s:
        s.sendall(b"GET /stream-forever HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    assert wait_until(lambda: "stream-forever: client left" in get(asgi, "/log").json()["log"], 10)


def test_a_client_that_leaves_a_long_poll_is_reported_to_the_app(asgi):
    with socket.create_connection(("127.0.0.1", asgi.port), timeout=5) as s:
        s.sendall(b"GET /long-poll HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_until(lambda: "long-poll: waiting" in get(asgi, "/log").json()["log"], 10)
    assert wait_until(lambda: "long-poll: http.disconnect" in get(asgi, "/log").json()["log"], 10)


def test_work_after_the_response_does_not_hold_a_place(porch):
    p = porch("-w", "1", "--asgi-concurrency", "1", *VENV, "asgi_app:app")
    assert get(p, "/respond-then-work").json() == {"responded": True}
    # The first task still runs, but its response is complete: this one gets the place.
    assert get(p, "/release", timeout=20).json() == {"released": True}
    assert wait_until(lambda: "background work done" in get(p, "/log").json()["log"], 10)


def test_many_requests_run_at_once_in_one_worker(porch):
    """--asgi-concurrency bounds the tasks; the rest wait in porch's queue, and all finish."""
    p = porch("-w", "1", "--asgi-concurrency", "3", *VENV, "asgi_app:app")
    assert wait_until(lambda: "(ASGI, 3 requests at once)" in p.log(), 20), p.log()
    results = []

    def one():
        results.append(get(p, "/sleep?0.3", timeout=30).status_code)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 10


# --- errors and the protocol's edge cases ---------------------------------------------------------


@pytest.mark.parametrize(
    "path, status, logged",
    [
        ("/raise", 500, "ValueError: boom before start"),
        ("/no-response", 500, "returned without sending http.response.start"),
        ("/body-before-start", 500, "http.response.body sent before http.response.start"),
    ],
)
def test_errors_before_the_response_are_500_with_the_request_line_logged(asgi, path, status, logged):
    r = get(asgi, path)
    assert r.status_code == status
    assert wait_until(lambda: f"Error handling request GET {path}" in asgi.log(), 5), asgi.log()[-2000:]
    assert logged in asgi.log()


def test_an_error_after_the_body_began_aborts_the_response(asgi):
    with RawConn(asgi.port, timeout=10) as c:
        c.send(b"GET /raise-after-body HTTP/1.1\r\nHost: x\r\n\r\n")
        # The client can tell: the connection ends before a complete response (the head
        # and the piece may or may not have left before the abort).
        try:
            resp = c.read_response()
            assert resp.status == 200 and not resp.complete
        except ConnectionEnded:
            pass
    assert wait_until(lambda: "ValueError: boom after body" in asgi.log(), 5)


def test_send_after_complete_is_refused_and_disconnect_follows_the_response(asgi):
    assert get(asgi, "/send-after-complete").json() == {"ok": True}
    assert get(asgi, "/disconnect-after-response").json() == {"ok": True}
    log = wait_until(lambda: len(get(asgi, "/log").json()["log"]) >= 2 and get(asgi, "/log").json()["log"], 5)
    assert any("send-after-complete: http.response.body sent after the response was complete" in x for x in log), log
    assert "after response: http.disconnect" in log, log


def test_response_trailers_reach_a_client_that_accepts_them(asgi):
    digest = hashlib.sha256(b"hello trailers").hexdigest()
    with_te = raw_request(asgi.port, b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n"
                          b"Connection: close\r\n\r\n")
    head, _, body = with_te.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    size, _, rest = body.partition(b"\r\n")
    assert int(size, 16) == 14, body
    assert rest == (b"hello trailers\r\n0\r\nx-checksum: " + digest.encode()
                    + b"\r\nx-more: 1\r\n\r\n"), body
    # A client that did not say it takes trailers gets the body alone, complete.
    plain = get(asgi, "/trailers")
    assert plain.status_code == 200 and plain.text == "hello trailers"


# --- timeouts -------------------------------------------------------------------------------------


def test_a_request_past_the_timeout_is_cancelled_and_the_worker_lives_on(porch):
    p = porch("-w", "1", "--timeout", "1", *VENV, "asgi_app:app")
    pid = get(p, "/pid").json()["pid"]
    r = get(p, "/sleep?60", timeout=30)
    assert r.status_code == 504
    assert wait_until(lambda: "its task was cancelled" in p.log(), 5), p.log()[-3000:]
    log = p.log()
    assert '"GET /sleep?60 HTTP/1.1"' in log
    assert "asgi_app.py" in log and "in app" in log, "the coroutine's frames are logged"
    assert get(p, "/pid").json()["pid"] == pid, "the worker was not replaced"
    # The timeout bounds pauses of a response, not its length: a stream that keeps
    # sending runs past it.
    r = get(p, "/ticks?8", timeout=30)
    assert r.status_code == 200 and r.text == "".join(f"tick {i}\n" for i in range(8))


def test_a_blocked_loop_past_the_timeout_gets_its_worker_replaced(porch):
    p = porch("-w", "1", "--timeout", "1", *VENV, "asgi_app:app")
    pid = get(p, "/pid").json()["pid"]
    r = get(p, "/block?60", timeout=30)
    assert r.status_code == 504
    assert wait_until(lambda: "the event loop is blocked" in p.log(), 10), p.log()[-3000:]
    assert "time.sleep" in p.log()
    assert wait_until(lambda: not alive(pid), 10)
    assert get(p, "/pid").json()["pid"] != pid


# --- lifespan -------------------------------------------------------------------------------------


def test_a_failed_startup_stops_porch_with_the_apps_message(porch):
    p = porch("-w", "2", *VENV, "asgi_startup_fails:app", wait=False)
    rc = p.wait(20)
    assert rc != 0
    assert "Application startup failed: the database is unreachable" in p.log()


def test_check_config_runs_the_startup_too():
    r = run_porch(["--check-config", *VENV, "asgi_startup_fails:app"], timeout=30)
    assert r.returncode != 0
    assert "the database is unreachable" in r.stdout + r.stderr


def test_shutdown_runs_when_porch_stops(porch, tmp_path):
    marker = tmp_path / "shutdown"
    p = porch("-w", "2", *VENV, "asgi_app:app", env={"ASGI_SHUTDOWN_FILE": str(marker)})
    assert wait_until(lambda: p.log().count("booted worker") == 2, 20)
    pids = set(p.worker_pids())
    assert get(p, "/pid").status_code == 200
    p.signal(signal.SIGTERM)
    assert p.wait(20) == 0
    lines = marker.read_text().split()
    assert {int(x) for x in lines[1::2]} == pids, lines


# --- interface selection --------------------------------------------------------------------------


def test_interface_can_be_forced_and_is_checked(porch, tmp_path):
    # auto finds the coroutine function; forcing wsgi on it stops start-up, naming the app
    # (called the WSGI way it would fail every request instead).
    r = run_porch(["--check-config", "--interface", "wsgi", *VENV, "asgi_app:app"], timeout=30)
    out = r.stderr + r.stdout
    assert r.returncode != 0 and "asgi_app:app is an ASGI app" in out, out
    r = run_porch(["--check-config", "--interface", "grpc", "asgi_app:app"], timeout=10)
    assert r.returncode != 0 and "interface" in r.stderr + r.stdout and "grpc" in r.stderr + r.stdout
    cfg = tmp_path / "porch.toml"
    cfg.write_text('app = "asgi_app:app"\ninterface = "asgi"\nloop = "asyncio"\nasgi_concurrency = 5\n')
    p = porch("-c", cfg, *VENV)
    assert wait_until(lambda: "(ASGI, 5 requests at once)" in p.log(), 20), p.log()
    assert get(p, "/scope").json()["loop"] == "asyncio"


# --- supervision ----------------------------------------------------------------------------------


def _client_loop(p, path, results, stop):
    s = requests.Session()
    while not stop.is_set():
        try:
            results.append(s.get(p.url + path, timeout=10).status_code)
        except requests.RequestException as e:
            results.append(type(e).__name__)
            s = requests.Session()


def _under_load(p, path, action, clients=4):
    results, stop = [], threading.Event()
    threads = [threading.Thread(target=_client_loop, args=(p, path, results, stop)) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        action()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    return results


def test_kill_9_of_an_asgi_worker_costs_only_its_in_flight_requests(porch):
    p = porch("-w", "2", *VENV, "asgi_app:app")
    assert wait_until(lambda: len(p.worker_pids()) == 2, 5)
    before = set(p.worker_pids())
    replaced = []

    def kill():
        os.kill(min(before), signal.SIGKILL)
        replaced.append(wait_until(lambda: len(set(p.worker_pids()) - before) == 1
                                   and len(p.worker_pids()) == 2, 10))

    results = _under_load(p, "/sleep?0.02", kill)
    assert replaced == [True], p.worker_pids()
    failures = [x for x in results if x != 200]
    assert results.count(200) >= 20, results
    # At most the requests the worker was running (one per client) fail, with 502.
    assert len(failures) <= 4 and all(f == 502 for f in failures), failures


def test_reload_under_load_fails_no_request(porch):
    p = porch("-w", "2", *VENV, "asgi_app:app")
    before = set(p.worker_pids())
    results = _under_load(p, "/sleep?0.02", lambda: (p.signal(signal.SIGHUP),
                          wait_until(lambda: not (set(p.worker_pids()) & before), 15)))
    assert not (set(p.worker_pids()) & before), "the workers were not replaced"
    assert results.count(200) >= 20 and all(x == 200 for x in results), [x for x in results if x != 200]


def test_max_requests_recycles_asgi_workers_without_failing_a_request(porch):
    p = porch("-w", "2", "--max-requests", "20", *VENV, "asgi_app:app")
    pids, failures = set(), []
    s = requests.Session()
    for _ in range(150):
        try:
            r = s.get(p.url + "/sleep?0.01", timeout=10)
            if r.status_code == 200:
                pids.add(r.json()["pid"])
            else:
                failures.append(r.status_code)
        except requests.RequestException as e:
            failures.append(repr(e))
            s = requests.Session()
    assert failures == []
    assert len(pids) >= 4, pids


# --- real frameworks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fastapi_server(porch_module):
    return porch_module("-w", "1", *VENV, "fastapi_app:app")


def test_fastapi_json_and_path_params(fastapi_server):
    r = get(fastapi_server, "/items/42?q=porch")
    assert r.json() == {"item_id": 42, "q": "porch"}
    assert get(fastapi_server, "/items/nope").status_code == 422
    r = requests.post(fastapi_server.url + "/json", json={"a": [1, "é"]}, timeout=10)
    assert r.json() == {"received": {"a": [1, "é"]}}


def test_fastapi_upload(fastapi_server):
    data = os.urandom(2 * 1024 * 1024 + 3)
    r = requests.post(fastapi_server.url + "/upload", files={"file": ("blob.bin", data)},
                      data={"note": "hi"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"filename": "blob.bin", "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(), "note": "hi"}


def test_fastapi_streaming_background_tasks_and_lifespan_state(fastapi_server):
    r = get(fastapi_server, "/stream")
    assert r.text == "".join(f"piece {i}\n" for i in range(5))
    assert requests.post(fastapi_server.url + "/background?name=job1", timeout=10).json() == {"queued": "job1"}
    assert wait_until(lambda: "job1" in get(fastapi_server, "/background").json()["done"], 5)
    s = get(fastapi_server, "/state").json()
    assert s["booted_pid"] == s["pid"]


@pytest.fixture(scope="module")
def starlette_server(porch_module):
    return porch_module("-w", "1", *VENV, "starlette_app:app")


def test_starlette_routes_forms_and_streams(starlette_server):
    r = get(starlette_server, "/hello?a=1")
    assert r.json() == {"path": "/hello", "root_path": "", "query": {"a": "1"}, "client": "127.0.0.1"}
    r = requests.post(starlette_server.url + "/form", data={"x": "a&b=c"}, timeout=10)
    assert r.json() == {"x": "a&b=c"}
    r = get(starlette_server, "/events")
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert get(starlette_server, "/sub/x").text == "sub /sub/x"


def test_django_async_view_under_asgi(porch):
    p = porch("-w", "1", *VENV, "djproject.asgi:application")
    assert wait_until(lambda: "(ASGI," in p.log(), 20), "Django's ASGIHandler is found by --interface auto"
    r = get(p, "/api/async/?q=1")
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "hello from an async django view", "path": "/api/async/",
                        "query": {"q": "1"}, "method": "GET"}
    # Sync views run too (Django runs them in a thread), and bodies arrive.
    assert get(p, "/api/hello/").json()["message"] == "hello from django"
    data = os.urandom(100_000)
    r = requests.post(p.url + "/api/echo/", data=data, headers={"Content-Type": "application/octet-stream"},
                      timeout=10)
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
