"""porch under a small open-files limit (128, set with prlimit so porch cannot raise it):
stalled HTTP/2 downloads of one static file share a descriptor, idle connections are
closed to make room for new clients, and a client that finds no room at all gets a 503
instead of waiting unanswered while accept() fails. Attackers connect from 127.0.0.2,
normal clients from 127.0.0.1; bounded in count and time, loopback only."""

from __future__ import annotations

import socket

import h2.config
import h2.connection
import h2.events
import h2.settings
import requests

from conftest import RawConn, admin_metric, free_port, wait_for_port, wait_until

LIMIT = 128
ATTACKER = "127.0.0.2"


def start(porch, tmp_path, static_dir=None):
    port, admin = free_port(), free_port()
    routes = ""
    if static_dir:
        routes = f'[[listener.route]]\npath = "/static/"\nstatic = "{static_dir}"\n'
    cfg = tmp_path / "porch.toml"
    cfg.write_text(
        f"""
workers = 1
admin_bind = "127.0.0.1:{admin}"

[[listener]]
bind = "127.0.0.1:{port}"
h2c = true
{routes}[[listener.route]]
path = "/"
app = true
"""
    )
    p = porch("-c", cfg, "wsgiapp:application", bind=False,
              wrap=["prlimit", f"--nofile={LIMIT}:{LIMIT}", "--"])
    wait_for_port(port, p.proc, 30)
    return p, port, admin


def normal(port: int, text: str):
    with RawConn(port, timeout=10) as c:
        c.send(f"GET /say?text={text} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        return c.read_response()


def open_fds(pid: int) -> int:
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))


def test_stalled_http2_downloads_of_one_file_share_a_descriptor(porch, tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "big.bin").write_bytes(b"x" * (4 << 20))
    p, port, _ = start(porch, tmp_path, static)
    streams = 100
    clients, answered = [], 0
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(ATTACKER, 0))
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
        )
        conn.initiate_connection()
        for _ in range(streams):
            conn.send_headers(conn.get_next_available_stream_id(), [
                (":method", "GET"), (":path", "/static/big.bin"),
                (":scheme", "http"), (":authority", "t")], end_stream=True)
        s.sendall(conn.data_to_send())
        clients.append((s, conn))
    # Every stream gets its 200 head; none can get data (no window).
    for s, conn in clients:
        heads = 0
        while heads < streams:
            data = s.recv(65536)
            assert data, "porch closed a connection with stalled static streams"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    assert dict(ev.headers)[b":status"] == b"200"
                    heads += 1
        answered += heads
    assert answered == 2 * streams
    # 200 downloads in progress, far below the 128 descriptors they would need apart.
    assert open_fds(p.proc.pid) < 64, open_fds(p.proc.pid)
    for i in range(5):
        r = normal(port, f"ok{i}")
        assert (r.status, r.body) == (200, f"ok{i}".encode())
    for s, _ in clients:
        s.close()


def test_idle_connections_make_room_for_new_clients_at_the_descriptor_limit(porch, tmp_path):
    p, port, admin = start(porch, tmp_path)
    idle = []
    try:
        # More idle connections (some with half a head) than there are descriptors.
        for i in range(LIMIT + 20):
            s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(ATTACKER, 0))
            if i % 2:
                s.sendall(b"GET /say?text=slow HTTP/1.1\r\nHost: t\r\n")
            idle.append(s)
        # New clients are still answered: the oldest idle connections are closed for them.
        for i in range(10):
            r = normal(port, f"room{i}")
            assert (r.status, r.body) == (200, f"room{i}".encode())
        assert admin_metric(admin, 'porch_out_of_descriptors_total{action="closed_idle"}') >= 10
    finally:
        for s in idle:
            s.close()


def test_with_no_idle_connection_to_close_a_new_client_gets_503_not_silence(porch, tmp_path):
    """Every descriptor held by a connection whose request is in progress (nothing idle to
    close): a new client is answered 503 through the spare descriptor, and porch goes on
    serving once they finish."""
    p, port, admin = start(porch, tmp_path)
    busy = []
    try:
        for i in range(LIMIT + 10):
            s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(ATTACKER, 0))
            # The first holds the one worker; the rest wait behind it, each still busy.
            seconds = 4 if i == 0 else 0.01
            s.sendall(f"GET /sleep?s={seconds}&n={i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            busy.append(s)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"GET /say?text=late HTTP/1.1\r\nHost: t\r\n\r\n")
            reply = b""
            while chunk := c.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 503 "), reply[:200]
    finally:
        for s in busy:
            s.close()
    assert wait_until(lambda: normal(port, "after").status == 200, 30)
    assert admin_metric(admin, 'porch_out_of_descriptors_total{action="refused_503"}') >= 1
