"""Attacks on `Upgrade` handling and on proxy routes, each the way it was first found
(raw sockets on loopback, a real upstream started here, bounded in count and time):

- an `Upgrade` header that gets no `101` must not switch the strict HTTP/1 checks off:
  smuggling, bare LF and slow heads after it are refused as before, on every listener
  kind (plain, h2c-capable, TLS);
- proxy routes hold a client's body to `limit_request_body` and `body_timeout` whatever
  its framing, blame the client (never the upstream) when its body breaks, pass on only
  the upgrades the route allows, and close idle tunnels at `tunnel_idle_timeout`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import RawConn, free_port, wait_for_port, wait_until

# The upstream: `python -c UPSTREAM PORT LOG`. Appends "METHOD TARGET complete|broken" to
# LOG for every request it read (whole or not), and answers:
#   GET /…/headers -> the request's headers as JSON
#   GET /…/ws with `Upgrade` -> 101 switching to the first protocol offered, then echoes
#                               bytes until the client closes
#   POST           -> {"length": N} once the body (Content-Length or chunked) is read
#   anything else  -> "up"
UPSTREAM = r'''
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, LOG = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()

def log(line):
    with lock, open(LOG, "a") as f:
        f.write(line + "\n")

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self, body, ctype="text/plain"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        log(f"GET {self.path} complete")
        if self.path.endswith("/headers"):
            h = {k.lower(): v for k, v in self.headers.items()}
            return self.answer(json.dumps(h).encode(), "application/json")
        upgrade = self.headers.get("Upgrade")
        if self.path.endswith("/ws") and upgrade:
            to = upgrade.split(",")[0].strip()
            self.wfile.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: {to}\r\n"
                             "Connection: Upgrade\r\n\r\n".encode())
            self.wfile.flush()
            self.close_connection = True
            while True:
                try:
                    data = self.connection.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self.connection.sendall(data)
        self.answer(b"up")

    def do_POST(self):
        n, complete = 0, False
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b""):
                            pass
                        complete = True
                        break
                    data = self.rfile.read(size)
                    if len(data) < size:
                        break
                    n += len(data)
                    self.rfile.readline()
            else:
                left = int(self.headers.get("Content-Length", "0"))
                while left:
                    data = self.rfile.read(min(left, 65536))
                    if not data:
                        break
                    n += len(data)
                    left -= len(data)
                complete = left == 0
        except (ValueError, OSError):
            pass
        log(f"POST {self.path} {'complete' if complete else 'broken'}")
        if not complete:
            self.close_connection = True
            return
        self.answer(json.dumps({"length": n}).encode(), "application/json")

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
'''


class Upstream:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.log = tmp / f"upstream-{self.port}.log"
        self.log.touch()
        self.proc = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(self.port), str(self.log)],
                                     start_new_session=True)
        wait_for_port(self.port, self.proc, timeout=15)

    def seen(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def make_cert(d: Path) -> tuple[Path, Path]:
    cert, key = d / "localhost.crt", d / "localhost.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True, timeout=60)
    return cert, key


class Site:
    """One porch with a plain, an h2c-capable and a TLS listener, each routing `/p/` and
    `/h2c/` to the upstream (the latter allowing `h2c` upgrades) and the rest to the app."""

    def __init__(self, porch, tmp: Path, upstream: Upstream, settings: str = ""):
        self.ports = {k: free_port() for k in ("plain", "h2c", "tls")}
        self.admin = free_port()
        cert, key = make_cert(tmp)
        routes = (
            '[[listener.route]]\npath = "/p/"\nproxy = "up"\n'
            '[[listener.route]]\npath = "/h2c/"\nproxy = "up"\nupgrades = ["h2c", "websocket"]\n'
            '[[listener.route]]\npath = "/"\napp = true\n'
        )
        listeners = ""
        for kind, port in self.ports.items():
            listeners += f'[[listener]]\nbind = "127.0.0.1:{port}"\n'
            if kind == "h2c":
                listeners += "h2c = true\n"
            if kind == "tls":
                listeners += f'tls = {{ cert = "{cert}", key = "{key}" }}\n'
            listeners += routes
        cfg = tmp / "porch.toml"
        cfg.write_text(f'workers = 1\nadmin_bind = "127.0.0.1:{self.admin}"\n{settings}\n{listeners}'
                       f'[upstream.up]\nservers = ["127.0.0.1:{upstream.port}"]\n'
                       f'tunnel_idle_timeout = 1\n')
        self.porch = porch("-c", cfg, "wsgiapp:application", bind=False)
        for port in self.ports.values():
            wait_for_port(port, self.porch.proc)
        # The app answers once its worker has imported it.
        assert wait_until(lambda: requests.get(f"http://127.0.0.1:{self.ports['plain']}/say?text=ok",
                                               timeout=5).status_code == 200, timeout=30), self.porch.log()

    def conn(self, kind: str, timeout: float = 5.0) -> RawConn:
        c = RawConn(self.ports[kind], timeout=timeout)
        if kind == "tls":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
        return c

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.admin}/metrics", timeout=10).text


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    u = Upstream(tmp_path_factory.mktemp("upstream"))
    yield u
    u.stop()


@pytest.fixture(scope="module")
def site(porch_module, tmp_path_factory, upstream):
    return Site(porch_module, tmp_path_factory.mktemp("site"), upstream,
                "header_timeout = 1\nbody_timeout = 1\nlimit_request_body = 100000\n")


KINDS = ["plain", "h2c", "tls"]

# An Upgrade request that gets no 101: the app answers it like any request; the proxy
# route does not pass `foo` on, and the upstream ignores a `websocket` it is not set up for.
UPGRADES = {
    "app": b"GET /say?text=first&marker={m} HTTP/1.1\r\nHost: t\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n",
    "proxy-foo": b"GET /p/first HTTP/1.1\r\nHost: t\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n",
    "proxy-websocket": b"GET /p/first HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    "proxy-h2c": (b"GET /h2c/first HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                  b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
}

FOLLOWERS = {
    "cl-te": (b"POST /{route}smuggler?marker={m1} HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
              b"GET /{route}smuggled?marker={m2} HTTP/1.1\r\nHost: t\r\n\r\n"),
    "bare-lf": b"GET /{route}bare-lf?marker={m1} HTTP/1.1\nHost: t\n\n",
}


def fill(data: bytes, route: str, m, m1="", m2="") -> bytes:
    return (data.replace(b"{route}", route.encode()).replace(b"{m}", str(m).encode())
            .replace(b"{m1}", str(m1).encode()).replace(b"{m2}", str(m2).encode()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("upgrade", list(UPGRADES))
@pytest.mark.parametrize("follower", list(FOLLOWERS))
def test_no_101_no_switch_smuggling_after_an_upgrade_is_refused(site, upstream, tmp_path, kind, upgrade,
                                                                 follower):
    route = "say" if upgrade == "app" else ("h2c/" if upgrade == "proxy-h2c" else "p/")
    m, m1, m2 = tmp_path / "m", tmp_path / "m1", tmp_path / "m2"
    with site.conn(kind) as c:
        c.send(fill(UPGRADES[upgrade], route, m) + fill(FOLLOWERS[follower], route, m, m1, m2))
        first = c.read_response()
        assert first.status == 200, first
        closed = c.wait_closed(5)
        second = c.read_response(timeout=1)
        assert second.status == 400, second
        assert c.buf.strip() == b"", c.buf[:300]
        assert closed
    time.sleep(0.2)
    assert not m1.exists() and not m2.exists(), "a request after the Upgrade reached the app"
    seen = upstream.seen()
    assert "smuggl" not in seen and "bare-lf" not in seen, seen


@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_head_after_an_upgrade_still_gets_408(site, tmp_path, kind):
    with site.conn(kind, timeout=10) as c:
        c.send(fill(UPGRADES["app"], "", tmp_path / "m"))
        assert c.read_response().status == 200
        c.send(b"GET /say?text=slow HTTP/1.1\r\nHost: t\r\n")  # never finished
        assert c.wait_closed(8), "a slow head after an Upgrade request was never timed out"
        assert c.buf.startswith(b"HTTP/1.1 408 "), c.buf[:100]


@pytest.mark.parametrize("kind", KINDS)
def test_a_101_still_opens_a_tunnel_and_an_idle_one_is_closed(site, kind):
    """A WebSocket-style switch works on each listener kind; after tunnel_idle_timeout
    (1 s here) without a byte either way porch closes it, while one in use stays open."""
    with site.conn(kind, timeout=10) as c:
        c.send(b"GET /p/ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        version, status, _, headers = c.read_head()
        assert status == 101 and ("upgrade", "websocket") in headers, (status, headers)
        # In use for three times the idle timeout: still open.
        for i in range(6):
            c.send(b"ping %d\n" % i)
            deadline = time.monotonic() + 5
            while b"ping %d\n" % i not in c.buf:
                assert c._fill(deadline), "tunnel closed while in use"
            time.sleep(0.5)
        # Then silence: closed.
        assert c.wait_closed(8), "an idle tunnel stayed open"


def test_only_the_upgrades_a_route_allows_reach_the_upstream(site):
    def headers(target: bytes, upgrade: bytes) -> dict:
        with site.conn("plain") as c:
            c.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nUpgrade: " + upgrade +
                   b"\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
            r = c.read_response()
            assert r.status == 200, r
            return json.loads(r.body)

    # Default route: websocket only. h2c (with its settings) and unknown tokens are stripped
    # and the request goes on as plain HTTP.
    for token in (b"h2c", b"foo", b"TLS/1.0"):
        h = headers(b"/p/headers", token)
        assert "upgrade" not in h and "http2-settings" not in h, h
        assert "upgrade" not in h.get("connection", "").lower(), h
    h = headers(b"/p/headers", b"h2c, websocket")
    assert h["upgrade"] == "websocket" and "http2-settings" not in h, h
    # A route with `upgrades = ["h2c", "websocket"]` passes h2c on with its settings.
    h = headers(b"/h2c/headers", b"h2c")
    assert h["upgrade"] == "h2c" and h["http2-settings"] == "AAMAAABkAAQAAP__", h


def test_an_upstream_101_to_a_stripped_upgrade_is_refused(site):
    """The route does not allow `foo`: the upstream never sees it; and a 101 switching to
    something not offered would be the upstream's error, never a tunnel."""
    with site.conn("plain") as c:
        c.send(b"GET /p/ws HTTP/1.1\r\nHost: t\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"up", r  # the upstream saw no Upgrade


# --- proxy route bodies -------------------------------------------------------------------


def upstream_failures(site) -> tuple[str, str]:
    m = site.metrics()
    up = [ln for ln in m.splitlines() if ln.startswith("porch_upstream_up{")]
    failures = [ln for ln in m.splitlines() if ln.startswith("porch_upstream_failures_total{")]
    return up, failures


def assert_upstream_unblamed(site):
    up, failures = upstream_failures(site)
    assert up and all(ln.endswith(" 1") for ln in up), up
    assert failures and all(ln.endswith(" 0") for ln in failures), failures
    assert "taken out" not in site.porch.log()
    r = requests.get(f"http://127.0.0.1:{site.ports['plain']}/p/after", timeout=10)
    assert r.status_code == 200 and r.text == "up"


@pytest.mark.parametrize("kind", ["plain", "h2c"])
def test_a_chunked_body_over_the_limit_gets_413_on_the_proxy_route(site, upstream, kind):
    """5 MB chunked against limit_request_body = 100000: 413 and the connection closed; the
    upstream never gets a complete request, and is not blamed for the cut."""
    with site.conn(kind, timeout=10) as c:
        c.send(b"POST /p/big-chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
        try:
            for _ in range(80):
                c.send(piece)
            c.send(b"0\r\n\r\n")
        except OSError:
            pass  # porch stopped reading and closed: expected
        r = c.read_response(timeout=10)
        assert r.status == 413, r
        assert c.wait_closed(5)
    assert "POST /p/big-chunked complete" not in upstream.seen()
    assert_upstream_unblamed(site)


def test_an_http2_body_without_length_over_the_limit_gets_413(site, upstream):
    import h2.config
    import h2.connection
    import h2.events

    with socket.create_connection(("127.0.0.1", site.ports["h2c"]), timeout=10) as s:
        c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.send_headers(1, [(":method", "POST"), (":path", "/p/big-h2"), (":scheme", "http"),
                           (":authority", "t")])
        s.sendall(c.data_to_send())
        status, sent = None, 0
        deadline = time.monotonic() + 15
        while status is None and time.monotonic() < deadline:
            window = min(c.local_flow_control_window(1), c.max_outbound_frame_size, 16384)
            if window > 0 and sent < 5_000_000:
                c.send_data(1, b"x" * window)
                sent += window
                s.sendall(c.data_to_send())
                s.settimeout(0.01)
            else:
                s.settimeout(1)
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            for event in c.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
            s.sendall(c.data_to_send())
    assert status == b"413", (status, sent)
    assert "POST /p/big-h2 complete" not in upstream.seen()
    assert_upstream_unblamed(site)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_stalled_body_gets_408_on_the_proxy_route(site, framing):
    head = b"POST /p/stalled HTTP/1.1\r\nHost: t\r\n"
    head += b"Content-Length: 1000\r\n\r\n" if framing == "length" else b"Transfer-Encoding: chunked\r\n\r\n"
    part = b"x" * 100 if framing == "length" else b"64\r\n" + b"x" * 100 + b"\r\n"
    with site.conn("plain", timeout=10) as c:
        c.send(head + part)  # and then nothing
        r = c.read_response(timeout=8)
        assert r.status == 408, r
        assert c.wait_closed(5)
    assert_upstream_unblamed(site)


@pytest.mark.parametrize("attack", ["bad-chunk-size", "chunk-too-long", "abandoned-length",
                                    "abandoned-chunked"])
def test_a_clients_broken_body_never_takes_the_upstream_out(site, upstream, attack):
    """Three in a row (max_fails is 1): each is the client's error, the server stays in."""
    head = b"POST /p/" + attack.encode() + b" HTTP/1.1\r\nHost: t\r\n"
    for _ in range(3):
        with site.conn("plain") as c:
            if attack == "bad-chunk-size":
                c.send(head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
            elif attack == "chunk-too-long":
                c.send(head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello-and-more\r\n0\r\n\r\n")
            elif attack == "abandoned-length":
                c.send(head + b"Content-Length: 100000\r\n\r\n" + b"x" * 5000)
            else:
                c.send(head + b"Transfer-Encoding: chunked\r\n\r\n1388\r\n" + b"x" * 5000 + b"\r\n")
            if attack.startswith("bad") or attack.startswith("chunk"):
                r = c.read_response()
                assert r.status == 400, r
                assert c.wait_closed(5)
            else:
                time.sleep(0.3)  # porch is forwarding; then the client goes away
    time.sleep(0.5)
    assert f"POST /p/{attack} complete" not in upstream.seen()
    assert_upstream_unblamed(site)


def test_a_body_within_the_limit_still_streams_through(site):
    for data in (b"y" * 99_000, iter([b"z" * 30_000] * 3)):
        r = requests.post(f"http://127.0.0.1:{site.ports['plain']}/p/ok", data=data, timeout=10)
        assert r.status_code == 200 and r.json() == {"length": 99_000 if isinstance(data, bytes) else 90_000}


def test_check_config_names_bad_upgrade_and_tunnel_settings(tmp_path):
    from conftest import run_porch

    base = ('[[listener]]\nbind = "127.0.0.1:1"\n[[listener.route]]\npath = "/"\nproxy = "up"\n{route}'
            '[upstream.up]\nservers = ["127.0.0.1:2"]\n{upstream}')
    cases = [
        ('upgrades = ["web socket"]\n', "", "`listener[0].route[0].upgrades`"),
        ("", "tunnel_idle_timeout = -1\n", "`upstream.up.tunnel_idle_timeout`"),
    ]
    for route, upstream, key in cases:
        cfg = tmp_path / "porch.toml"
        cfg.write_text(base.format(route=route, upstream=upstream))
        out = run_porch(["-c", cfg, "--check-config"])
        assert out.returncode != 0 and key in out.stderr, out.stderr
    cfg.write_text(base.format(route='upgrades = ["websocket", "h2c"]\n', upstream="tunnel_idle_timeout = 30\n"))
    out = run_porch(["-c", cfg, "--check-config"])
    assert out.returncode == 0, out.stderr
