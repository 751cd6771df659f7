"""WebSockets of ASGI apps: porch's front terminates them (RFC 6455) and the app in the
worker sees ``websocket.*`` events. Real clients (the ``websockets`` library, raw
sockets for what a library would hide), real frameworks (Starlette, FastAPI, Django
Channels), and supervision: reload, kill -9 and shutdown with sockets open."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import sys
import time

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import RawConn, rss_kib, wait_until

if sys.prefix == sys.base_prefix:
    pytest.skip("run the tests from the test virtualenv (scripts/test does)", allow_module_level=True)
VENV = ["--venv", sys.prefix]
KEY = base64.b64encode(b"0123456789abcdef").decode()


def ws_url(p, path):
    return f"ws://127.0.0.1:{p.port}{path}"


def closes(p):
    return requests.get(p.url + "/closes", timeout=5).json()["closes"]


def handshake(path="/echo", *, version="13", key=KEY, method="GET", extra=""):
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {key}\r\n{extra}\r\n").encode()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked frame, as a client must send (RFC 6455 section 5.3)."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    sock.settimeout(timeout)

    def exact(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed after %d of %d bytes" % (len(data), n))
            data += chunk
        return data

    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exact(8))[0]
    assert not b1 & 0x80, "server frames are not masked"
    return b0 & 0x0F, exact(n)


def raw_socket(p, path="/echo") -> socket.socket:
    """A switched socket, by hand: for what a client library answers on its own."""
    sock = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    sock.sendall(handshake(path))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


@pytest.fixture(scope="module")
def ws(porch_module):
    return porch_module("-w", "1", *VENV, "ws_app:app")


# --- messages and the scope -----------------------------------------------------------------------


def test_text_and_binary_messages_echo_in_order(ws):
    with connect(ws_url(ws, "/echo")) as c:
        for i in range(50):
            c.send(f"message {i}")
            c.send(bytes([i, 0, 255]))
        got = [c.recv() for _ in range(100)]
    assert got == [x for i in range(50) for x in (f"message {i}", bytes([i, 0, 255]))]


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 3 * 1024 * 1024 + 1])
def test_messages_of_every_length_class_arrive_whole(ws, size):
    data = os.urandom(size)
    with connect(ws_url(ws, "/echo"), max_size=None) as c:
        c.send(data)
        assert c.recv() == data


def test_fragmented_messages_reach_the_app_whole(ws):
    with connect(ws_url(ws, "/echo")) as c:
        c.send(["frag", "mented ", "text"])
        assert c.recv() == "fragmented text"


def test_the_websocket_scope(ws):
    with connect(ws_url(ws, "/scope/a%20b?x=1"), subprotocols=["one", "two"]) as c:
        s = json.loads(c.recv())
    assert s["type"] == "websocket" and not s["has_method"]
    assert s["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert s["scheme"] == "ws" and s["http_version"] == "1.1"
    assert s["path"] == "/scope/a b" and s["raw_path"] == "/scope/a%20b" and s["query_string"] == "x=1"
    assert s["subprotocols"] == ["one", "two"]
    assert s["extensions"] == {"websocket.http.response": {}}
    assert ["sec-websocket-protocol", "one, two"] in s["headers"]
    assert s["client"][0] == "127.0.0.1" and s["server"] == ["127.0.0.1", ws.port]


def test_the_app_chooses_the_subprotocol_and_adds_headers(ws):
    with connect(ws_url(ws, "/subprotocol"), subprotocols=["a", "b"]) as c:
        assert c.subprotocol == "b"
        assert c.response.headers["set-cookie"] == "session=abc"
        assert c.recv() == "chose b"


# --- refusals and the app's answers ---------------------------------------------------------------


def test_a_close_before_accepting_is_a_403(ws):
    with pytest.raises(InvalidStatus) as e:
        connect(ws_url(ws, "/deny"))
    assert e.value.response.status_code == 403


def test_the_denial_extension_sends_the_apps_own_response(ws):
    with RawConn(ws.port) as c:
        c.send(handshake("/deny-http"))
        r = c.read_response()
    assert r.status == 418 and r.header("x-why") == "teapot"
    assert r.body == b"short and stout"


@pytest.mark.parametrize("path,status", [("/raise-before", 500), ("/no-answer", 500)])
def test_an_app_that_fails_or_returns_before_answering_gets_a_500(ws, path, status):
    with pytest.raises(InvalidStatus) as e:
        connect(ws_url(ws, path))
    assert e.value.response.status_code == status
    want = "failed before accepting" if path == "/raise-before" else "returned without accepting"
    assert wait_until(lambda: want in ws.log(), 5), ws.log()[-2000:]


@pytest.mark.parametrize("head,status,extra", [
    (handshake(version="8"), 426, "sec-websocket-version"),
    (handshake(key="short"), 400, None),
    (handshake(method="POST"), 400, None),
    (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY.encode() + b"\r\n\r\n", 400, None),
], ids=["version-8", "bad-key", "post", "no-connection-upgrade"])
def test_broken_handshakes_get_a_specific_answer(ws, head, status, extra):
    with RawConn(ws.port) as c:
        c.send(head)
        r = c.read_response()
    assert r.status == status, r
    if extra:
        assert r.header(extra) == "13"


# --- closing --------------------------------------------------------------------------------------


def test_the_apps_close_code_and_reason_reach_the_client(ws):
    with connect(ws_url(ws, "/app-closes")) as c:
        assert c.recv() == "bye"
        with pytest.raises(ConnectionClosed) as e:
            c.recv()
    assert (e.value.rcvd.code, e.value.rcvd.reason) == (4001, "custom reason")
    assert wait_until(lambda: any(x["path"] == "/app-closes" and x["code"] == 4001 for x in closes(ws)))


def test_the_clients_close_code_and_reason_reach_the_app(ws):
    c = connect(ws_url(ws, "/echo/client-closes"))
    c.send("x")
    assert c.recv() == "x"
    c.close(code=4002, reason="client says bye")
    assert wait_until(lambda: {"path": "/echo/client-closes", "code": 4002, "reason": "client says bye"}
                      in closes(ws)), closes(ws)


def test_a_client_that_vanishes_is_a_1006_for_the_app(ws):
    sock = raw_socket(ws, "/echo/vanish")
    sock.close()
    assert wait_until(lambda: any(x["path"] == "/echo/vanish" and x["code"] == 1006
                                  for x in closes(ws))), closes(ws)


def test_sending_after_the_client_closed_raises_an_oserror_in_the_app(ws):
    c = connect(ws_url(ws, "/send-after-close"))
    c.close()
    assert wait_until(lambda: {"path": "/send-after-close", "code": -1, "reason": "ClientGone"}
                      in closes(ws)), closes(ws)


def test_an_app_that_returns_with_the_socket_open_closes_it_normally(ws):
    with connect(ws_url(ws, "/return-open")) as c:
        assert c.recv() == "done"
        with pytest.raises(ConnectionClosed) as e:
            c.recv()
    assert e.value.rcvd.code == 1000


def test_an_app_that_fails_while_open_closes_with_1011_and_logs_the_traceback(ws):
    with connect(ws_url(ws, "/raise-after")) as c:
        assert c.recv() == "about to fail"
        with pytest.raises(ConnectionClosed) as e:
            c.recv()
    assert e.value.rcvd.code == 1011
    assert wait_until(lambda: "RuntimeError: failed while open" in ws.log(), 5)
    assert "Error handling WebSocket GET /raise-after" in ws.log()


# --- limits and liveness --------------------------------------------------------------------------


def test_a_message_over_the_limit_closes_with_1009(porch):
    p = porch("-w", "1", *VENV, "--ws-max-message", "1024", "ws_app:app")
    with connect(ws_url(p, "/echo/limit")) as c:
        c.send("a" * 1024)
        assert c.recv() == "a" * 1024
        c.send("a" * 1025)
        with pytest.raises(ConnectionClosed) as e:
            c.recv()
    assert e.value.rcvd.code == 1009
    assert wait_until(lambda: any(x["code"] == 1009 for x in closes(p))), closes(p)


def test_invalid_utf8_in_a_text_message_closes_with_1007(ws):
    sock = raw_socket(ws, "/echo/utf8")
    sock.sendall(client_frame(0x1, b"\xff\xfe"))
    op, payload = read_frame(sock)
    assert op == 0x8 and struct.unpack("!H", payload[:2])[0] == 1007
    sock.close()


def test_a_client_that_answers_no_ping_is_closed_with_1011(porch):
    p = porch("-w", "1", *VENV, "--ws-ping-interval", "0.3", "--ws-ping-timeout", "0.5", "ws_app:app")
    sock = raw_socket(p, "/echo/pings")
    t0 = time.monotonic()
    op, _ = read_frame(sock)
    assert op == 0x9, "a ping"
    op, payload = read_frame(sock)
    assert op == 0x8 and struct.unpack("!H", payload[:2])[0] == 1011, (op, payload)
    assert payload[2:] == b"ping timeout"
    assert 0.6 < time.monotonic() - t0 < 5
    sock.close()


def test_a_client_that_answers_pings_stays_open(porch):
    p = porch("-w", "1", *VENV, "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3", "ws_app:app")
    with connect(ws_url(p, "/echo")) as c:  # the library answers pings
        time.sleep(1.5)
        c.send("still here")
        assert c.recv() == "still here"


def test_a_handshake_the_app_leaves_unanswered_gets_504_and_its_task_is_cancelled(porch):
    p = porch("-w", "1", "--timeout", "1", *VENV, "ws_app:app")
    pid = p.worker_pids()
    with pytest.raises(InvalidStatus) as e:
        connect(ws_url(p, "/slow-accept"), open_timeout=10)
    assert e.value.response.status_code == 504
    assert wait_until(lambda: "its task was cancelled" in p.log(), 5), p.log()[-2000:]
    assert "in slow_accept" in p.log()
    # The worker lives on.
    with connect(ws_url(p, "/echo")) as c:
        c.send("ok")
        assert c.recv(timeout=5) == "ok"
    assert p.worker_pids() == pid


def test_open_sockets_count_against_the_connection_limits(porch):
    """A switched connection leaves HTTP but stays open: it keeps its place under
    limit_connections_per_ip until it closes."""
    p = porch("-w", "1", "--limit-connections-per-ip", "3", *VENV, "ws_app:app")
    sockets = [connect(ws_url(p, "/echo")) for _ in range(3)]
    try:
        assert requests.get(p.url + "/closes", timeout=5).status_code == 429
        sockets.pop().close()
        assert wait_until(lambda: requests.get(p.url + "/closes", timeout=5).status_code == 200, 5)
    finally:
        for s in sockets:
            s.close()


def test_a_reader_that_pauses_gets_every_message_in_order(ws):
    """Messages for a client that does not read wait in the front (spilled past its
    memory bound), and arrive complete and in order."""
    n = 20000
    with connect(ws_url(ws, f"/stream?n={n}"), max_queue=None) as c:
        time.sleep(1.0)
        got = [c.recv(timeout=10) for _ in range(n)]
    assert got == [str(i) for i in range(n)]


def test_a_wsgi_app_answers_a_handshake_as_any_request(porch):
    p = porch("-w", "1", *VENV, "wsgiapp:application")
    with RawConn(p.port) as c:
        c.send(handshake("/"))
        r = c.read_response()
    # The app's own answer (its 404 page), not a switch: WSGI has no WebSocket.
    assert (r.status, r.body) == (404, b"not found: /"), r


def test_wss_over_tls_and_the_access_log_line(porch, tmp_path):
    import ssl

    from test_tls import make_cert

    cert, key = make_cert(tmp_path, "localhost", ["localhost"], "ec")
    p = porch("--certfile", cert, "--keyfile", key, "--access-logfile", "-", "-w", "1", *VENV,
              "ws_app:app")
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    with connect(f"wss://127.0.0.1:{p.port}/scope", ssl=ctx) as c:
        s = json.loads(c.recv())
    assert s["scheme"] == "wss"
    assert wait_until(lambda: '"GET /scope HTTP/1.1" 101' in p.stdout(), 5), p.stdout()


# --- frameworks -----------------------------------------------------------------------------------


def test_starlette_websocket_route(porch):
    p = porch("-w", "1", *VENV, "starlette_app:app")
    with connect(ws_url(p, "/ws/sum"), subprotocols=["sum.v1"]) as c:
        assert c.subprotocol == "sum.v1"
        for n in (1, 2, 39):
            c.send(str(n))
        c.send("done")
        assert json.loads(c.recv()) == {"total": 42}
        with pytest.raises(ConnectionClosed) as e:
            c.recv()
    assert (e.value.rcvd.code, e.value.rcvd.reason) == (4000, "summed")


def test_fastapi_websocket_with_path_and_query_parameters(porch):
    p = porch("-w", "1", *VENV, "fastapi_app:app")
    with connect(ws_url(p, "/ws/items/7?q=find")) as c:
        c.send(json.dumps({"a": 1}))
        assert json.loads(c.recv()) == {"item_id": 7, "q": "find", "got": {"a": 1}}
    assert wait_until(lambda: "ws closed 1000" in requests.get(p.url + "/background").json()["done"])


@pytest.fixture(scope="module")
def channels(porch_module):
    return porch_module("-w", "1", *VENV, "channels_app:application")


def test_django_channels_echo_consumer(channels):
    with connect(ws_url(channels, "/ws/echo")) as c:
        c.send("hi")
        assert c.recv() == "echo: hi"
        c.send(b"abc")
        assert c.recv() == b"cba"
    assert requests.get(channels.url + "/hello").json() == {"hello": "http"}


def test_django_channels_group_broadcast(channels):
    members = [connect(ws_url(channels, "/ws/room/lobby")) for _ in range(3)]
    outsider = connect(ws_url(channels, "/ws/room/elsewhere"))
    try:
        for m in members + [outsider]:
            assert "joined" in json.loads(m.recv())
        members[0].send(json.dumps({"text": "hello room"}))
        for m in members:
            assert json.loads(m.recv()) == {"said": "hello room"}
        with pytest.raises(TimeoutError):
            outsider.recv(timeout=0.5)
    finally:
        for m in members + [outsider]:
            m.close()


def test_django_channels_consumer_that_refuses(channels):
    with pytest.raises(InvalidStatus) as e:
        connect(ws_url(channels, "/ws/private"))
    assert e.value.response.status_code == 403


# --- supervision with sockets open ----------------------------------------------------------------


async def hold_sockets(url: str, n: int, action, after_open=None):
    """Opens n sockets that each echo one message, runs `action` (in a thread), and
    returns the close code each socket ended with."""
    import websockets

    opened = []
    for i in range(0, n, 100):
        batch = await asyncio.gather(*(websockets.connect(url, ping_interval=None, open_timeout=30)
                                       for _ in range(min(100, n - i))))
        opened.extend(batch)
    for s in opened:
        await s.send("hello")
    echoes = await asyncio.gather(*(s.recv() for s in opened))
    assert echoes == ["hello"] * n
    if after_open is not None:
        after_open()
    await asyncio.get_running_loop().run_in_executor(None, action)

    async def ended(s):
        try:
            await asyncio.wait_for(s.recv(), 30)
            return "message"
        except websockets.ConnectionClosed as e:
            return e.rcvd.code if e.rcvd is not None else "no close frame"

    return await asyncio.gather(*(ended(s) for s in opened))


def test_a_thousand_sockets_on_one_worker_then_a_reload_closes_each_with_1012(porch):
    p = porch("-w", "1", "--graceful-timeout", "2", *VENV, "ws_app:app")
    old = p.worker_pids()
    memory = {}

    def measure():
        front = p.proc.pid
        memory["front_kib"] = rss_kib(front)
        memory["worker_kib"] = rss_kib(old[0])
        metrics = requests.get(p.url + "/closes").json()
        memory["worker_pid"] = metrics["pid"]

    def reload():
        p.signal(signal.SIGHUP)
        assert wait_until(lambda: p.worker_pids() and not set(p.worker_pids()) & set(old), 20)

    codes = asyncio.run(hold_sockets(ws_url(p, "/echo/many"), 1000, reload, measure))
    print(f"\n1000 open WebSockets: front RSS {memory['front_kib'] / 1024:.1f} MiB, "
          f"worker RSS {memory['worker_kib'] / 1024:.1f} MiB")
    assert codes == [1012] * 1000, {c: codes.count(c) for c in set(codes)}
    # Bounded: tens of KiB per socket on each side, not the default buffers of a proxy.
    assert memory["front_kib"] < 64 * 1024 and memory["worker_kib"] < 96 * 1024, memory
    # The new worker serves sockets.
    with connect(ws_url(p, "/echo")) as c:
        c.send("after")
        assert c.recv() == "after"


def test_kill_9_of_the_worker_closes_its_sockets_with_1011_and_a_new_one_serves(porch):
    p = porch("-w", "1", *VENV, "ws_app:app")
    old = p.worker_pids()

    def kill():
        os.kill(old[0], signal.SIGKILL)

    codes = asyncio.run(hold_sockets(ws_url(p, "/echo"), 20, kill))
    assert codes == [1011] * 20, codes
    assert wait_until(lambda: p.worker_pids() and p.worker_pids() != old, 10)
    with connect(ws_url(p, "/echo")) as c:
        c.send("again")
        assert c.recv() == "again"


def test_shutdown_closes_open_sockets_with_1012_and_porch_exits(porch):
    p = porch("-w", "1", "--graceful-timeout", "1", *VENV, "ws_app:app")
    codes = asyncio.run(hold_sockets(ws_url(p, "/echo"), 10, lambda: p.signal(signal.SIGTERM)))
    assert codes == [1012] * 10, codes
    assert p.wait(10) == 0
