"""The reverse proxy: porch -c porch.toml in front of real upstream servers started here
(small Python HTTP servers in their own processes, a WebSocket echo server), on loopback.

Each upstream answers with its own id, so the tests see where every request went.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import RawConn, free_port, wait_for_port, wait_until

# An upstream server: `python -c UPSTREAM ID PORT`. HTTP/1.1 with keep-alive.
#   /id            -> its id
#   /headers       -> the request's headers as JSON, plus {"id": ...}
#   /conns         -> how many connections it has accepted
#   /health        -> 200, or 503 while the file <state dir>/<id>.sick exists
#   /slow?s=N      -> waits N seconds, then its id
#   POST /upload   -> sha256 and length of the body (Content-Length or chunked)
UPSTREAM = r'''
import hashlib, json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

ID, PORT, STATE = sys.argv[1], int(sys.argv[2]), sys.argv[3]

CONNS = [0]

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        CONNS[0] += 1
        super().setup()

    def log_message(self, *a):
        pass

    def answer(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Upstream", ID)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/headers":
            h = {k.lower(): v for k, v in self.headers.items()}
            h["id"] = ID
            h["x-forwarded-for-count"] = str(len(self.headers.get_all("X-Forwarded-For") or []))
            return self.answer(200, json.dumps(h).encode(), "application/json")
        if url.path == "/conns":
            return self.answer(200, str(CONNS[0]).encode())
        if url.path == "/health":
            sick = os.path.exists(os.path.join(STATE, ID + ".sick"))
            return self.answer(503 if sick else 200, b"sick" if sick else b"ok")
        if url.path == "/slow":
            time.sleep(float(parse_qs(url.query)["s"][0]))
        self.answer(200, ID.encode())

    do_HEAD = do_GET

    def do_POST(self):
        h = hashlib.sha256()
        n = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                data = self.rfile.read(size)
                self.rfile.readline()
                h.update(data)
                n += len(data)
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                data = self.rfile.read(min(left, 65536))
                if not data:
                    break
                h.update(data)
                n += len(data)
                left -= len(data)
        self.answer(200, json.dumps({"id": ID, "sha256": h.hexdigest(), "length": n}).encode(),
                    "application/json")

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
'''


class Upstream:
    def __init__(self, uid: str, state: Path):
        self.id = uid
        self.port = free_port()
        self.state = state
        self.proc = subprocess.Popen(
            [sys.executable, "-c", UPSTREAM, uid, str(self.port), str(state)],
            start_new_session=True,
        )
        wait_for_port(self.port, self.proc, timeout=15)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def sick(self, on: bool) -> None:
        f = self.state / f"{self.id}.sick"
        if on:
            f.write_text("1")
        else:
            f.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def upstreams(tmp_path):
    """Factory: ``upstreams(n)`` starts n upstream servers with ids u0, u1, ..."""
    started: list[Upstream] = []

    def start(n: int) -> list[Upstream]:
        new = [Upstream(f"u{len(started) + i}", tmp_path) for i in range(n)]
        started.extend(new)
        return new

    yield start
    for u in started:
        u.kill()


class Front:
    def __init__(self, proc, port: int, admin: int):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.admin = f"http://127.0.0.1:{admin}"


@pytest.fixture
def front(porch, tmp_path):
    """Factory: ``front(servers, **upstream_settings)`` starts porch as a pure proxy with
    one listener routing everything to `[upstream.pool]`."""

    def start(servers: list[str], **settings) -> Front:
        port, admin = free_port(), free_port()
        lines = [
            f'admin_bind = "127.0.0.1:{admin}"',
            "[[listener]]",
            f'bind = "127.0.0.1:{port}"',
            "[[listener.route]]",
            'path = "/"',
            'proxy = "pool"',
            "[upstream.pool]",
            "servers = [" + ", ".join(json.dumps(s) for s in servers) + "]",
        ]
        for k, v in settings.items():
            lines.append(f"{k} = {json.dumps(v)}")
        config = tmp_path / f"porch-{port}.toml"
        config.write_text("\n".join(lines) + "\n")
        p = porch("-c", str(config), bind=False, wait=False)
        try:
            wait_for_port(port, p.proc, timeout=30)
        except Exception as exc:
            raise RuntimeError(f"porch did not start ({exc}):\n{p.log()}") from None
        f = Front(p, port, admin)
        f.log = p.log
        return f

    return start


def ids(front: Front, n: int, path: str = "/id") -> list[str]:
    out = []
    with requests.Session() as s:
        for _ in range(n):
            r = s.get(front.url + path, timeout=10)
            assert r.status_code == 200, (r.status_code, r.text, front.log())
            out.append(r.text)
    return out


def test_round_robin_spreads_requests_evenly(upstreams, front):
    ups = upstreams(3)
    f = front([u.addr for u in ups])
    got = ids(f, 30)
    assert sorted(set(got)) == ["u0", "u1", "u2"]
    assert all(got.count(u.id) == 10 for u in ups), got


def test_least_connections_sends_new_requests_to_the_idle_server(upstreams, front):
    ups = upstreams(2)
    f = front([u.addr for u in ups], balance="least_conn")
    # Hold one upstream busy with slow requests; quick ones must go to the other.
    results: list[str] = []

    def slow():
        results.append(requests.get(f.url + "/slow?s=2", timeout=10).text)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    busy = [u.id for u in ups]
    quick = ids(f, 6)
    t.join()
    assert len(results) == 1 and results[0] in busy
    assert set(quick) == {next(i for i in busy if i != results[0])}, (results, quick)


def test_keep_alive_connections_to_upstreams_are_reused(upstreams, front):
    (u,) = upstreams(1)
    f = front([u.addr])
    ids(f, 20)
    # One connection (two if a request came just before the previous one was put back).
    conns = int(requests.get(f.url + "/conns", timeout=10).text)
    assert 1 <= conns <= 2, conns


def test_killed_upstream_fails_no_get(upstreams, front):
    ups = upstreams(3)
    f = front([u.addr for u in ups], max_fails=1, fail_timeout=30)
    assert set(ids(f, 9)) == {"u0", "u1", "u2"}  # connections to u1 are now kept
    ups[1].kill()
    got = ids(f, 30)  # every one answered 200 (checked in ids)
    assert set(got) == {"u0", "u2"}
    # Requests with a body are retried too when the connection could not be made.
    r = requests.post(f.url + "/upload", data=b"x" * 1000, timeout=10)
    assert r.status_code == 200 and r.json()["length"] == 1000


def test_failures_take_a_server_out_for_fail_timeout(upstreams, front):
    """A server that accepts connections and drops them: after max_fails failures porch
    stops sending to it until fail_timeout passes."""
    (good,) = upstreams(1)
    bad = socket.socket()
    bad.bind(("127.0.0.1", 0))
    bad.listen(64)
    accepted = []

    def drop_all():
        while True:
            try:
                c, _ = bad.accept()
            except OSError:
                return
            accepted.append(1)
            c.close()

    threading.Thread(target=drop_all, daemon=True).start()
    try:
        f = front([good.addr, f"127.0.0.1:{bad.getsockname()[1]}"], max_fails=2, fail_timeout=3)
        got = ids(f, 20)  # GETs without a body go to the next server: all 200
        assert set(got) == {"u0"}
        assert len(accepted) == 2, accepted  # out after its second failure
        time.sleep(3.5)
        ids(f, 4)
        assert 3 <= len(accepted) <= 4, accepted  # back in rotation, and out again
        assert "taken out" in f.log()
    finally:
        bad.close()


def test_active_health_check_takes_a_sick_server_out_and_back(upstreams, front):
    ups = upstreams(2)
    f = front([u.addr for u in ups], health_check_path="/health", health_check_interval=0.3)
    assert set(ids(f, 4)) == {"u0", "u1"}
    ups[1].sick(True)
    assert wait_until(lambda: set(ids(f, 4)) == {"u0"}, timeout=5), f.log()
    assert set(ids(f, 10)) == {"u0"}
    ups[1].sick(False)
    assert wait_until(lambda: set(ids(f, 4)) == {"u0", "u1"}, timeout=5), f.log()


def test_forwarded_headers_reach_the_upstream(upstreams, front):
    (u,) = upstreams(1)
    f = front([u.addr])
    with RawConn(f.port) as c:
        c.send(
            b"GET /headers HTTP/1.1\r\nHost: shop.example:8443\r\n"
            b"X-Forwarded-For: 203.0.113.9\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
            b"Connection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=9\r\n"
            b"X-App: kept\r\n\r\n"
        )
        r = c.read_response()
    assert r.status == 200, r
    h = json.loads(r.body)
    assert h["host"] == "shop.example:8443"  # passed through unchanged
    assert h["x-forwarded-host"] == "shop.example:8443"
    assert h["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert h["x-forwarded-for-count"] == "1"
    assert h["x-real-ip"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-app"] == "kept"
    assert "x-drop-me" not in h and "keep-alive" not in h
    # The upstream's own framing and hop-by-hop headers are porch's business.
    assert r.header("x-upstream") == "u0"
    assert r.header("keep-alive") is None


def test_large_post_streams_through_intact(upstreams, front):
    (u,) = upstreams(1)
    f = front([u.addr])
    body = os.urandom(10 * 1024 * 1024)
    r = requests.post(f.url + "/upload", data=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "u0", "sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}

    # Chunked, from a generator: porch streams it on without knowing its length.
    def chunks():
        for i in range(0, len(body), 256 * 1024):
            yield body[i:i + 256 * 1024]

    r = requests.post(f.url + "/upload", data=chunks(), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_head_and_keep_alive_after_proxied_responses(upstreams, front):
    (u,) = upstreams(1)
    f = front([u.addr])
    with RawConn(f.port) as c:
        c.send(b"HEAD /id HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(head=True)
        assert r.status == 200 and r.header("content-length") == "2"
        for _ in range(3):
            c.send(b"GET /id HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response()
            assert r.status == 200 and r.body == b"u0"


def test_502_when_every_upstream_is_down(front):
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    f = front(dead)
    for _ in range(3):
        r = requests.get(f.url + "/id", timeout=10)
        assert r.status_code == 502
    r = requests.post(f.url + "/upload", data=b"abc", timeout=10)
    assert r.status_code == 502
    assert "no server answered" in f.log()


def test_504_when_the_upstream_is_too_slow(upstreams, front):
    (u,) = upstreams(1)
    f = front([u.addr], header_timeout=0.5)
    t0 = time.monotonic()
    r = requests.get(f.url + "/slow?s=3", timeout=10)
    assert r.status_code == 504
    assert time.monotonic() - t0 < 2.5
    # The slow server is only slow on that path: it still answers.
    assert requests.get(f.url + "/id", timeout=10).text == "u0"


def test_unix_socket_upstream(porch, tmp_path):
    sock = tmp_path / "app.sock"
    app = porch("--bind", f"unix:{sock}", "-w", "1", "wsgiapp:application", bind=False, wait=False)
    assert wait_until(sock.exists, timeout=30), app.log()
    port = free_port()
    config = tmp_path / "front.toml"
    config.write_text(
        f'[[listener]]\nbind = "127.0.0.1:{port}"\n[[listener.route]]\npath = "/"\n'
        f'proxy = "app"\n[upstream.app]\nservers = ["unix:{sock}"]\n'
    )
    f = porch("-c", str(config), bind=False, wait=False)
    wait_for_port(port, f.proc)
    r = None
    for _ in range(50):  # the app server accepts once its worker has imported the app
        r = requests.get(f"http://127.0.0.1:{port}/say?text=via-unix", timeout=10)
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200 and r.text == "via-unix", (r.status_code, r.text, f.log())


def test_upstream_metrics(upstreams, front):
    ups = upstreams(2)
    dead = f"127.0.0.1:{free_port()}"
    f = front([u.addr for u in ups] + [dead], max_fails=1, fail_timeout=30)
    ids(f, 6)
    m = requests.get(f.admin + "/metrics", timeout=10).text
    assert "# TYPE porch_upstream_up gauge" in m, m
    for u in ups:
        assert f'porch_upstream_up{{upstream="pool",server="{u.addr}"}} 1\n' in m, m
    assert f'porch_upstream_up{{upstream="pool",server="{dead}"}} 0\n' in m, m
    assert f'porch_upstream_failures_total{{upstream="pool",server="{dead}"}} 1\n' in m, m
    lines = [ln for ln in m.splitlines() if ln.startswith("porch_upstream_requests_total")]
    assert sum(int(ln.rsplit(" ", 1)[1]) for ln in lines) == 6, lines


def test_websocket_echo_through_the_proxy(front):
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    port = free_port()
    ready = threading.Event()
    stop: list = []

    async def echo(ws):
        async for msg in ws:
            await ws.send(f"echo:{msg}")

    async def main():
        async with serve(echo, "127.0.0.1", port):
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            stop.append((loop, done))
            ready.set()
            await done

    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        f = front([f"127.0.0.1:{port}"])

        async def client():
            async with connect(f"ws://127.0.0.1:{f.port}/chat", open_timeout=10) as ws:
                out = []
                for i in range(5):
                    await ws.send(f"m{i}")
                    out.append(await asyncio.wait_for(ws.recv(), 10))
                big = "x" * 200_000
                await ws.send(big)
                out.append(await asyncio.wait_for(ws.recv(), 10))
                return out

        out = asyncio.run(client())
        assert out[:5] == [f"echo:m{i}" for i in range(5)]
        assert out[5] == "echo:" + "x" * 200_000
    finally:
        loop, done = stop[0]
        loop.call_soon_threadsafe(done.set_result, None)
        t.join(10)


def test_a_proxied_tunnel_keeps_its_place_under_the_per_ip_limit(porch, tmp_path):
    """After the 101 the client's connection leaves HTTP but stays open: it still counts
    under limit_connections_per_ip until the tunnel closes."""
    from websockets.sync.client import connect
    from websockets.sync.server import serve

    upstream_port, port = free_port(), free_port()

    def echo(ws):
        for msg in ws:
            ws.send(msg)

    server = serve(echo, "127.0.0.1", upstream_port)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        config = tmp_path / "porch.toml"
        config.write_text(
            "limit_connections_per_ip = 2\n"
            f'[[listener]]\nbind = "127.0.0.1:{port}"\n[[listener.route]]\npath = "/"\n'
            f'proxy = "pool"\n[upstream.pool]\nservers = ["127.0.0.1:{upstream_port}"]\n'
        )
        p = porch("-c", str(config), bind=False, wait=False)
        wait_for_port(port, p.proc)
        tunnels = [connect(f"ws://127.0.0.1:{port}/chat", open_timeout=10) for _ in range(2)]
        try:
            for ws in tunnels:
                ws.send("hi")
                assert ws.recv(timeout=10) == "hi"
            r = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
            assert r.status_code == 429, (r.status_code, r.text)
            tunnels.pop().close()
            assert wait_until(
                lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code != 429, 5)
        finally:
            for ws in tunnels:
                ws.close()
    finally:
        server.shutdown()
        t.join(10)
