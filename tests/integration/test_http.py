"""HTTP/1.x behaviour of the front: keep-alive, pipelining, HTTP/1.0, HEAD, 100-continue,
chunked request bodies, Host rules, Content-Length discipline, failures mid-body."""

from __future__ import annotations

import json
import socket
import time

import pytest

from conftest import ConnectionEnded, RawConn, raw_exchange


@pytest.fixture(scope="module")
def server(porch_module):
    return porch_module("-w", "2", "wsgiapp:application")


def req(path: str, *, method="GET", headers=(), body=b"", version="HTTP/1.1", host=True) -> bytes:
    lines = [f"{method} {path} {version}"]
    if host:
        lines.append("Host: test")
    lines += list(headers)
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_keep_alive_serves_several_requests_on_one_connection(server):
    with RawConn(server.port) as c:
        for i in range(5):
            c.send(req(f"/say?text=ka{i}"))
            r = c.read_response()
            assert r.status == 200 and r.body == f"ka{i}".encode()
            assert r.version == "HTTP/1.1"
            assert (r.header("connection") or "").lower() != "close"
        assert not c.wait_closed(0.3)


def test_pipelined_requests_are_answered_in_order(server):
    with RawConn(server.port, timeout=10) as c:
        # the first one is slow: its answer must still come first
        c.send(req("/sleep?s=0.5") + req("/say?text=second") + req("/say?text=third"))
        bodies = [c.read_response().body for _ in range(3)]
    assert bodies == [b"slept", b"second", b"third"]


def test_pipelined_post_bodies_are_not_mixed_up(server):
    with RawConn(server.port, timeout=10) as c:
        c.send(
            req("/echo?mode=readn", method="POST", body=b"body-one")
            + req("/echo?mode=readn", method="POST", body=b"body-two-longer")
            + req("/say?text=three")
        )
        bodies = [c.read_response().body for _ in range(3)]
    assert bodies == [b"body-one", b"body-two-longer", b"three"]


def test_http_1_0_request(server):
    data, closed = raw_exchange(server.port, req("/say?text=old", version="HTTP/1.0", host=False))
    assert closed, "an HTTP/1.0 request without keep-alive ends with the server closing"
    assert data.startswith(b"HTTP/1."), data[:100]
    assert b" 200 " in data.split(b"\r\n", 1)[0]
    assert data.endswith(b"\r\n\r\nold")


def test_http_1_0_streamed_response_is_not_chunked(server):
    with RawConn(server.port) as c:
        c.send(req("/stream?n=3", version="HTTP/1.0", host=False))
        r = c.read_response()
    assert r.status == 200
    assert r.framing in ("close", "length"), r
    assert "chunked" not in (r.header("transfer-encoding") or "")
    assert r.body == b"chunk-0\nchunk-1\nchunk-2\n"


@pytest.mark.parametrize("path", ["/say?text=hello", "/stream?n=3", "/big?size=100000"])
def test_head_sends_headers_only(server, path):
    with RawConn(server.port) as c:
        c.send(req(path, method="HEAD"))
        head = c.read_response(head=True)
        assert head.status == 200
        if path.startswith("/say"):
            assert head.header("content-length") == "5"
        if path.startswith("/big"):
            assert head.header("content-length") == "100000"
        c.send(req("/say?text=after-head"))
        nxt = c.read_response()
    # had the HEAD response carried a body, this would not parse as the next response
    assert nxt.version == "HTTP/1.1" and nxt.status == 200, nxt
    assert nxt.body == b"after-head"


def test_expect_100_continue(server):
    with RawConn(server.port) as c:
        c.send(b"POST /echo?mode=readn HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n"
               b"Expect: 100-continue\r\n\r\n")
        version, status, _, _ = c.read_head(timeout=3)
        assert status == 100
        c.send(b"hello there")
        r = c.read_response()
    assert r.status == 200 and r.body == b"hello there"


def test_expect_100_continue_with_body_sent_at_once(server):
    with RawConn(server.port) as c:
        c.send(b"POST /echo?mode=readn HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\nhello")
        r = c.read_response()
    assert r.status == 200 and r.body == b"hello"


def test_chunked_request_body_with_extensions_and_trailers(server):
    body = (b"5;name=value\r\nhello\r\n"
            b"1\r\n \r\n"
            b"A\r\n0123456789\r\n"
            b"0\r\nX-Trailer: yes\r\n\r\n")
    with RawConn(server.port) as c:
        c.send(b"POST /echo?mode=read HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello 0123456789"
        c.send(req("/say?text=after-chunked"))
        assert c.read_response().body == b"after-chunked"


def test_absolute_form_request_target(server):
    with RawConn(server.port) as c:
        c.send(f"GET http://127.0.0.1:{server.port}/env?abs=1 HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{server.port}\r\n\r\n".encode())
        r = c.read_response()
    env = json.loads(r.body)
    assert env["PATH_INFO"] == "/env" and env["QUERY_STRING"] == "abs=1"


# --- Host --------------------------------------------------------------------------------------


def test_valid_request_reaches_the_app(server, tmp_path):
    """Control for the marker file the Host tests rely on."""
    marker = tmp_path / "called"
    with RawConn(server.port) as c:
        c.send(req(f"/say?text=ok&marker={marker}"))
        assert c.read_response().status == 200
    assert marker.exists()


@pytest.mark.parametrize(
    "host_lines",
    [[], ["Host: a.example", "Host: b.example"], ["Host: a.example", "Host: a.example"],
     ["Host: bad host.example"]],
    ids=["missing", "two-different", "two-same", "space-in-host"],
)
def test_http_1_1_without_a_single_valid_host_is_400(server, tmp_path, host_lines):
    marker = tmp_path / "called"
    request = (f"GET /say?text=x&marker={marker} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in host_lines)
               + "\r\n").encode()
    data, closed = raw_exchange(server.port, request)
    assert data.split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"400"], data[:200]
    time.sleep(0.3)
    assert not marker.exists(), "the app was called"


# --- the app's own framing mistakes -----------------------------------------------------------------


def test_app_body_shorter_than_content_length_never_corrupts_the_next_response(server):
    with RawConn(server.port) as c:
        c.send(req("/bad-length"))
        try:
            r = c.read_response(timeout=5)
        except TimeoutError:
            pytest.fail("fewer body bytes than Content-Length, and the connection left open: "
                        "the next response would be read as the rest of this body")
        except ConnectionEnded:
            return  # closed without a response: the client can tell, nothing left to corrupt
        if r.status == 200:
            # the client must be able to tell: fewer bytes than announced, then close
            assert not r.complete, r
            return
        assert r.status == 500, r
        c.send(req("/say?text=next-after-short"))
        nxt = c.read_response()
        assert nxt.status == 200 and nxt.body == b"next-after-short", nxt


def test_app_body_longer_than_content_length_never_corrupts_the_next_response(server):
    with RawConn(server.port) as c:
        c.send(req("/bad-length?more=1"))
        r = c.read_response(timeout=5)
        # Exactly the announced bytes, as Gunicorn sends: a complete response by its framing.
        assert (r.status, r.body) == (200, b"L" * 100), r
        c.send(req("/say?text=next-after-long"))
        nxt = c.read_response()
        assert nxt.version == "HTTP/1.1" and nxt.status == 200, nxt
        assert nxt.body == b"next-after-long"


@pytest.mark.parametrize("cl", [None, 1000], ids=["chunked", "content-length"])
def test_app_failing_mid_body_leaves_the_client_able_to_tell(server, cl):
    path = "/error-mid-body" + (f"?cl={cl}" if cl else "")
    with RawConn(server.port) as c:
        c.send(req(path))
        try:
            r = c.read_response(timeout=5)
        except Exception:  # noqa: BLE001 - aborted before the head: the client can tell
            return
        assert r.status == 500 or not r.complete, f"failure looks like a complete response: {r}"
        if r.status != 500:
            assert c.wait_closed(5), "connection left open after an aborted response"


def test_the_apps_reason_phrase_reaches_the_client(server):
    def status_line(path):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(req(path))
            data = b""
            while b"\r\n" not in data:
                data += s.recv(4096)
            return data.split(b"\r\n", 1)[0]

    assert status_line("/status?code=200&reason=All%20Good") == b"HTTP/1.1 200 All Good"
    assert status_line("/status?code=404") == b"HTTP/1.1 404 Not Found"


def test_an_absolute_form_targets_authority_is_the_host_the_app_sees(server):
    raw = (b"GET http://a.example:8080/env?x=1 HTTP/1.1\r\nHost: other.example\r\n"
           b"Connection: close\r\n\r\n")
    with RawConn(server.port) as c:
        c.send(raw)
        r = c.read_response()
    assert r.status == 200, r
    env = json.loads(r.body)
    assert env["HTTP_HOST"] == "a.example:8080"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("a.example", "8080")
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/env", "x=1")
