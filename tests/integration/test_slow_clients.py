"""Slow and hostile clients never hold the single worker of a 1-worker porch: a body sent
one byte a second, 300 slowloris connections, a client that does not read its response.

The attacking connections come from 127.0.0.2 (still loopback) and the normal clients from
127.0.0.1, as they would be different hosts in real life."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import RawConn, wait_until
from wsgiapp import pattern_bytes

ATTACKER = "127.0.0.2"
BOUND = 2.0  # seconds a normal request may take while an attack runs


def attacker_socket(port: int, timeout: float = 10.0, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.bind((ATTACKER, 0))
    s.connect(("127.0.0.1", port))
    return s


def normal_request(port: int, text: str) -> tuple[int, float]:
    started = time.monotonic()
    with RawConn(port, timeout=BOUND + 3) as c:
        c.send(f"GET /say?text={text} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        r = c.read_response()
    assert r.body == text.encode(), r
    return r.status, time.monotonic() - started


def probe_while(port: int, attack_running, duration: float, interval: float = 0.2):
    """Normal requests during the attack: (status, seconds) for each."""
    out = []
    end = time.monotonic() + duration
    i = 0
    while time.monotonic() < end and attack_running():
        try:
            out.append(normal_request(port, f"probe{i}"))
        except Exception as e:  # noqa: BLE001
            out.append((repr(e), BOUND + 99))
        i += 1
        time.sleep(interval)
    return out


def test_body_sent_one_byte_a_second_does_not_block_other_clients(porch):
    p = porch("-w", "1", "wsgiapp:application")
    body = b"slow!"
    slow = attacker_socket(p.port, timeout=20)
    slow.sendall(b"POST /echo?mode=readn HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
    done = threading.Event()

    def trickle():
        try:
            for b in body:
                time.sleep(1.0)
                slow.sendall(bytes([b]))
        finally:
            done.set()

    t = threading.Thread(target=trickle)
    t.start()
    time.sleep(0.3)
    probes = probe_while(p.port, lambda: not done.is_set(), duration=len(body) + 1)
    t.join(15)
    assert len(probes) >= 8, probes
    bad = [pr for pr in probes if pr[0] != 200 or pr[1] >= BOUND]
    assert not bad, f"normal requests failed or waited while a body trickled in: {bad}"
    # the slow client still gets its answer, with its whole body
    slow.settimeout(10)
    data = b""
    while not data.endswith(body):
        chunk = slow.recv(65536)
        if not chunk:
            break
        data += chunk
    slow.close()
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\n" + body), data


def test_300_slowloris_connections_do_not_delay_normal_requests(porch):
    p = porch("-w", "1", "wsgiapp:application")
    conns = []
    try:
        for _ in range(300):
            s = attacker_socket(p.port, timeout=2)
            s.sendall(b"GET /say?text=loris HTTP/1.1\r\nHost: t\r\n")
            conns.append(s)
        stop = threading.Event()

        def keep_feeding():
            n = 0
            while not stop.wait(1.0):
                n += 1
                for s in conns:
                    try:
                        s.sendall(b"X-Loris-%d: x\r\n" % n)
                    except OSError:
                        pass

        feeder = threading.Thread(target=keep_feeding)
        feeder.start()
        try:
            probes = probe_while(p.port, lambda: True, duration=5.0)
        finally:
            stop.set()
            feeder.join(10)
    finally:
        for s in conns:
            s.close()
    assert len(probes) >= 10, probes
    bad = [pr for pr in probes if pr[0] != 200 or pr[1] >= BOUND]
    assert not bad, f"normal requests failed or waited during slowloris: {bad}"


def test_client_that_does_not_read_its_response_does_not_hold_the_worker(porch):
    p = porch("-w", "1", "wsgiapp:application")
    size = 32 * 1024 * 1024
    lazy = attacker_socket(p.port, timeout=30, rcvbuf=4096)
    lazy.sendall(f"GET /big?size={size} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    time.sleep(0.5)
    probes = [normal_request(p.port, f"while-lazy-{i}") for i in range(5)]
    bad = [pr for pr in probes if pr[0] != 200 or pr[1] >= BOUND]
    assert not bad, f"normal requests waited for a client that does not read: {bad}"
    # the lazy client still gets the whole response when it finally reads
    data = bytearray()
    head_end = -1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        chunk = lazy.recv(1 << 20)
        if not chunk:
            break
        data += chunk
        if head_end < 0:
            head_end = data.find(b"\r\n\r\n")
        if head_end >= 0 and len(data) - head_end - 4 >= size:
            break
    lazy.close()
    assert head_end > 0 and data.startswith(b"HTTP/1.1 200")
    assert bytes(data[head_end + 4:]) == pattern_bytes(size)
