"""HTTP/2 clients that open streams and never grant flow-control credit: the front's
memory stays within `response_memory_total` (the rest of each response waits in a
temporary file), the connection is closed at `send_timeout`, and other clients keep being
answered meanwhile. Bounded: 40 streams on two connections, loopback only."""

from __future__ import annotations

import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

from conftest import RawConn, admin_metric, free_port, rss_kib, wait_for_port, wait_until

BIG = 4 * 1024 * 1024
STREAMS = 20


def stalled_h2_client(port: int, streams: int, size: int) -> socket.socket:
    """Opens `streams` requests for `size` bytes each with an initial window of 0 and
    never sends WINDOW_UPDATE: the server may send no DATA at all."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
    )
    conn.initiate_connection()
    for i in range(streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid,
            [
                (":method", "GET"),
                (":path", f"/big?size={size}&n={i}"),
                (":scheme", "http"),
                (":authority", "t"),
            ],
            end_stream=True,
        )
    s.sendall(conn.data_to_send())
    return s


def closed_by_server(s: socket.socket, within: float) -> bool:
    """Reads (and drops) whatever arrives until the server closes the socket."""
    s.settimeout(0.5)
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            if not s.recv(65536):
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def test_streams_without_flow_control_credit_hold_bounded_memory_and_time_out(porch, tmp_path):
    port, admin = free_port(), free_port()
    cfg = tmp_path / "porch.toml"
    cfg.write_text(
        f"""
workers = 1
admin_bind = "127.0.0.1:{admin}"
send_timeout = 4
response_memory = 262144
response_memory_total = 4194304

[[listener]]
bind = "127.0.0.1:{port}"
h2c = true
[[listener.route]]
path = "/"
app = true
"""
    )
    p = porch("-c", cfg, "wsgiapp:application", bind=False)
    wait_for_port(port, p.proc, 30)
    with RawConn(port) as c:  # warm: the worker is up, the allocator has its arenas
        c.send(b"GET /say?text=warm HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().status == 200
    before = rss_kib(p.proc.pid)

    attackers = [stalled_h2_client(port, STREAMS, BIG) for _ in range(2)]
    total = len(attackers) * STREAMS * BIG
    # The worker answers every stream at once (a slow client never holds it): wait until
    # all 160 MiB have left it and sit in the front.
    spilled = lambda: admin_metric(admin, "porch_response_spilled_bytes_total")  # noqa: E731
    assert wait_until(lambda: spilled() >= total - 2 * 4194304, 60), p.log()
    grown_mib = (rss_kib(p.proc.pid) - before) / 1024
    # The in-memory bound is 4 MiB in all, plus one piece per stream that hyper holds.
    print(f"front grew {grown_mib:.1f} MiB")
    assert grown_mib < 40, f"front grew {grown_mib:.0f} MiB holding {total >> 20} MiB of replies"

    # Meanwhile other clients are answered.
    for i in range(5):
        with RawConn(port, timeout=10) as c:
            c.send(f"GET /say?text=other{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            r = c.read_response()
            assert (r.status, r.body) == (200, f"other{i}".encode())

    # At send_timeout the stalled connections are closed and what they held is freed.
    for s in attackers:
        assert closed_by_server(s, 30), "a connection with stalled streams stayed open"
        s.close()
    assert wait_until(lambda: admin_metric(admin, "porch_response_buffered_bytes") == 0, 10)
    assert admin_metric(admin, "porch_send_timeouts_total") == len(attackers)
