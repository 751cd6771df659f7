"""Request bodies: big uploads arrive intact; a body the client cut short never reaches the app."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time

import pytest
import requests

from conftest import RawConn

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(porch_module):
    return porch_module("-w", "2", "wsgiapp:application")


@pytest.mark.parametrize("size", [1 * MiB, 50 * MiB], ids=["1MiB", "50MiB"])
def test_upload_arrives_intact(server, size):
    body = os.urandom(size)
    r = requests.post(server.url + "/sha256", data=body, timeout=60,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["length"] == size
    assert got["sha256"] == hashlib.sha256(body).hexdigest()
    assert got["content_length"] == str(size)


def test_chunked_upload_arrives_intact_with_content_length(server):
    pieces = [os.urandom(n) for n in (1, 100, 65535, 65536, 65537, 3 * MiB, 7)]
    body = b"".join(pieces)
    r = requests.post(server.url + "/sha256", data=iter(pieces), timeout=60)  # chunked
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["length"] == len(body)
    assert got["sha256"] == hashlib.sha256(body).hexdigest()
    assert got["content_length"] == str(len(body))


def test_complete_body_reaches_the_app(server, tmp_path):
    """Control: the marker file appears when a request is complete."""
    marker = tmp_path / "called"
    with RawConn(server.port) as c:
        c.send(f"POST /sha256?marker={marker} HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n"
               .encode() + b"0123456789")
        r = c.read_response()
    assert r.status == 200
    assert marker.exists()


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("how", ["shutdown", "reset"])
def test_body_cut_short_never_reaches_the_app(server, tmp_path, framing, how):
    marker = tmp_path / "called"
    if framing == "length":
        head = (f"POST /sha256?marker={marker} HTTP/1.1\r\nHost: t\r\n"
                f"Content-Length: 100000\r\n\r\n").encode()
        partial = b"a" * 5000
    else:
        head = (f"POST /sha256?marker={marker} HTTP/1.1\r\nHost: t\r\n"
                f"Transfer-Encoding: chunked\r\n\r\n").encode()
        partial = b"1000\r\n" + b"a" * 4096 + b"\r\n" + b"10\r\n" + b"b" * 8  # no last chunk
    c = RawConn(server.port)
    c.send(head + partial)
    time.sleep(0.3)
    if how == "shutdown":
        c.sock.shutdown(socket.SHUT_WR)
        try:
            c.wait_closed(3)
        except OSError:
            pass
        if c.buf:
            # whatever the server answered, it was not the app's 200
            assert not c.buf.startswith(b"HTTP/1.1 200"), c.buf[:200]
    else:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    # give a (wrong) dispatch every chance to happen, then check the workers are idle and ok
    time.sleep(1.0)
    r = requests.post(server.url + "/sha256", data=b"next", timeout=10)
    assert r.status_code == 200 and r.json()["length"] == 4
    assert not marker.exists(), f"the app saw a truncated body: {marker.read_text()}"


def test_after_dechunking_the_app_sees_the_length_and_no_transfer_encoding(server):
    """The front removed the chunked framing: CONTENT_LENGTH holds, Transfer-Encoding does
    not (apps that check it, such as httpbin, would refuse the request). Other hop-by-hop
    headers reach the app as on Gunicorn."""
    with RawConn(server.port) as c:
        c.send(b"POST /env HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: keep-alive\r\nTE: trailers\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    env = json.loads(r.body)
    assert env["CONTENT_LENGTH"] == "11" and env["_body"] == "hello world"
    assert "HTTP_TRANSFER_ENCODING" not in env, env.get("HTTP_TRANSFER_ENCODING")
    assert env["HTTP_CONNECTION"] == "keep-alive" and env["HTTP_TE"] == "trailers"


def test_bodies_in_memory_stay_within_body_memory_total(porch, tmp_path):
    """Eight 768 KiB uploads wait for a busy worker: at most `body_memory_total` of them is
    held in the front's memory, the rest wait in temporary files, and every one reaches
    the app intact."""
    from concurrent.futures import ThreadPoolExecutor

    from conftest import admin_metric, free_port, wait_for_port, wait_until

    port, admin = free_port(), free_port()
    cfg = tmp_path / "porch.toml"
    cfg.write_text(
        f"""
workers = 1
bind = ["127.0.0.1:{port}"]
admin_bind = "127.0.0.1:{admin}"
body_memory_total = 2097152
"""
    )
    p = porch("-c", cfg, "wsgiapp:application", bind=False)
    wait_for_port(port, p.proc, 30)
    size = 768 * 1024
    bodies = [os.urandom(size) for _ in range(8)]

    def upload(body):
        r = requests.post(f"http://127.0.0.1:{port}/sha256", data=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(9) as pool:
        busy = pool.submit(requests.get, f"http://127.0.0.1:{port}/sleep?s=3", timeout=30)
        time.sleep(0.3)  # the worker is asleep: the uploads below wait in the queue
        results = [pool.submit(upload, b) for b in bodies]
        peak = 0
        while not all(r.done() for r in results):
            peak = max(peak, admin_metric(admin, "porch_request_body_buffered_bytes"))
            assert peak <= 2 * MiB, peak
            time.sleep(0.05)
        assert busy.result().status_code == 200
        got = [r.result() for r in results]
    assert [g["sha256"] for g in got] == [hashlib.sha256(b).hexdigest() for b in bodies]
    assert peak >= size, "two bodies fit in memory while the worker sleeps"
    assert admin_metric(admin, "porch_request_body_spilled_bytes_total") >= 5 * size
    assert wait_until(lambda: admin_metric(admin, "porch_request_body_buffered_bytes") == 0, 5)
