"""PEP 3333 as the app sees it: environ, wsgi.input, wsgi.errors, start_response, write(),
iterables, file_wrapper, close(), errors. The app is wrapped in wsgiref.validate.validator,
which fails the request (500) on any deviation from the spec on either side."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid

import pytest
import requests

from conftest import RawConn, wait_until
from wsgiapp import pattern_bytes

BODY = b"first line\nsecond\n\n\xff\x00binary\r\nlast-without-newline"


@pytest.fixture(scope="module")
def server(porch_module):
    return porch_module("-w", "2", "wsgiapp:application")


@pytest.fixture(scope="module")
def raw_server(porch_module):
    """The same app without the validator (which hides file_wrapper from the server)."""
    return porch_module("-w", "1", "wsgiapp:raw")


def raw_env(port: int, request: bytes) -> dict:
    with RawConn(port) as c:
        c.send(request)
        r = c.read_response()
    assert r.status == 200, r
    return json.loads(r.body)


def get_env(server, path="/env", **kw) -> dict:
    r = requests.get(server.url + path, timeout=10, **kw)
    assert r.status_code == 200, r.text
    return r.json()


# --- environ ------------------------------------------------------------------------------


def test_required_environ_keys(server):
    env = get_env(server, "/env")
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/env"
    assert env["QUERY_STRING"] == ""
    assert env["SERVER_NAME"]
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_HOST"] == f"127.0.0.1:{server.port}"
    assert env["wsgi.version"] == "(1, 0)"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] == "False"
    assert env["wsgi.multiprocess"] == "True"
    assert env["wsgi.run_once"] == "False"
    assert env["wsgi.input_terminated"] == "True"
    for key in ("wsgi.input", "wsgi.errors", "wsgi.file_wrapper"):
        assert key in env
    for key, typ in env["_types"].items():
        if "." not in key:
            assert typ == "str", (key, typ)
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env


def test_remote_addr_and_port(server):
    with RawConn(server.port) as c:
        local_port = c.sock.getsockname()[1]
        c.send(b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n")
        env = json.loads(c.read_response().body)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)


def test_path_info_is_percent_decoded_latin1_and_query_string_raw(server):
    env = raw_env(
        server.port,
        b"GET /env/caf%C3%A9/a%20b/%2F/100%25?q=caf%C3%A9&x=a+b&y=%2F&flag HTTP/1.1\r\n"
        b"Host: t\r\n\r\n",
    )
    # UTF-8 bytes of "é" decoded as latin-1: the PEP 3333 "native string" rule
    assert env["PATH_INFO"] == "/env/caf\u00c3\u00a9/a b///100%"
    assert env["QUERY_STRING"] == "q=caf%C3%A9&x=a+b&y=%2F&flag"


def test_script_name_from_environment(porch):
    p = porch("-w", "1", "wsgiapp:application", env={"SCRIPT_NAME": "/mount"})
    env = get_env(p, "/mount/env/inner?x=1")
    assert env["SCRIPT_NAME"] == "/mount"
    assert env["PATH_INFO"] == "/env/inner"
    assert env["QUERY_STRING"] == "x=1"


def test_headers_with_underscores_are_dropped(server):
    for order in ((b"X-Auth-User: good", b"X_Auth_User: evil"),
                  (b"X_Auth_User: evil", b"X-Auth-User: good")):
        env = raw_env(
            server.port,
            b"GET /env HTTP/1.1\r\nHost: t\r\n" + b"\r\n".join(order)
            + b"\r\nOnly_Underscore: sneaky\r\n\r\n",
        )
        assert env["HTTP_X_AUTH_USER"] == "good", order
        assert "HTTP_ONLY_UNDERSCORE" not in env
        assert "sneaky" not in json.dumps(env)


def test_two_cookie_lines_are_joined_with_semicolon(server):
    env = raw_env(server.port, b"GET /env HTTP/1.1\r\nHost: t\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n")
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_repeated_headers_are_joined_with_comma(server):
    env = raw_env(server.port, b"GET /env HTTP/1.1\r\nHost: t\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n")
    assert env["HTTP_X_MULTI"] in ("a,b", "a, b")


def test_content_type_and_length(server):
    r = requests.post(server.url + "/env", data=b"hello", headers={"Content-Type": "text/x-test"},
                      timeout=10)
    env = r.json()
    assert env["REQUEST_METHOD"] == "POST"
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert env["CONTENT_LENGTH"] == "5"
    assert env["_body"] == "hello"


def test_content_length_is_set_after_a_chunked_upload(server):
    env = raw_env(
        server.port,
        b"POST /env HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
    )
    assert env["CONTENT_LENGTH"] == "11"
    assert env["_body"] == "hello world"


def test_forwarded_for_is_trusted_only_from_allowed_peers(porch):
    headers = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Forwarded-Proto": "https"}
    trusted = porch("-w", "1", "--forwarded-allow-ips", "127.0.0.1", "wsgiapp:application")
    env = get_env(trusted, "/env", headers=headers)
    assert env["wsgi.url_scheme"] == "https"
    # the address the trusted proxy saw (the last hop), or the proxy's own; never the
    # left-most entry, which any client can write
    assert env["REMOTE_ADDR"] in ("203.0.113.7", "127.0.0.1")
    untrusted = porch("-w", "1", "--forwarded-allow-ips", "192.0.2.1", "wsgiapp:application")
    env = get_env(untrusted, "/env", headers=headers)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"


# --- wsgi.input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", ["read", "read-none", "readn", "read1", "readline", "readline-n", "readlines", "iter"]
)
@pytest.mark.parametrize("body", [BODY, b"", b"no newline at all"], ids=["lines", "empty", "oneline"])
def test_wsgi_input_read_methods(server, mode, body):
    r = requests.post(f"{server.url}/echo?mode={mode}", data=body, timeout=10)
    assert r.status_code == 200, r.text
    assert r.content == body


@pytest.mark.parametrize("mode", ["read", "readn", "readline", "iter"])
def test_wsgi_input_large_bodies(server, mode):
    # one 300 KiB line, then many short lines: crosses every buffer boundary
    body = b"x" * (300 * 1024) + b"\n" + b"".join(b"line %d\n" % i for i in range(20000))
    r = requests.post(f"{server.url}/echo?mode={mode}", data=body, timeout=20)
    assert r.status_code == 200, r.text[:200]
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(body).hexdigest()


# --- wsgi.errors ----------------------------------------------------------------------------


def test_wsgi_errors_goes_to_the_error_log(server):
    token = f"wsgi-errors-{uuid.uuid4().hex}"
    assert requests.get(f"{server.url}/stderr?msg={token}", timeout=10).status_code == 200
    assert wait_until(lambda: token in server.log(), 5), server.log()[-2000:]


# --- the response side -----------------------------------------------------------------------


def test_write_callable(server):
    r = requests.get(server.url + "/write", timeout=10)
    assert r.status_code == 200
    assert r.text == "part1-part2-part3"


def test_iterable_without_content_length_is_chunked(server):
    with RawConn(server.port) as c:
        c.send(b"GET /stream?n=5 HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.framing == "chunked" and r.complete, r
        assert r.body == b"".join(b"chunk-%d\n" % i for i in range(5))
        # the connection stays usable
        c.send(b"GET /say?text=next HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().body == b"next"


def test_large_streamed_response(server):
    r = requests.get(server.url + "/stream?n=200&size=65536", timeout=30)
    assert r.status_code == 200
    expected = b"".join((b"%d" % (i % 10)) * 65536 for i in range(200))
    assert len(r.content) == len(expected)
    assert r.content == expected


def test_content_length_is_honoured(server):
    size = 3 * 1024 * 1024 + 17
    with RawConn(server.port, timeout=20) as c:
        c.send(f"GET /big?size={size} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        r = c.read_response()
    assert r.framing == "length" and r.complete
    assert r.header("content-length") == str(size)
    assert r.body == pattern_bytes(size)


def test_two_set_cookie_lines_stay_separate(server):
    with RawConn(server.port) as c:
        c.send(b"GET /cookie HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
    assert sorted(r.header_all("set-cookie")) == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]


def test_header_values_are_sent_as_latin1_and_other_characters_are_the_apps_error(raw_server):
    with RawConn(raw_server.port) as c:
        c.send(b"GET /latin1-header?v=cafe HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
    # (RawConn decodes the head as latin-1: the one byte 0xE9 reads back as "é")
    assert r.status == 200 and r.header("x-word") == "caf\u00e9", r.headers
    r = requests.get(raw_server.url + "/latin1-header?v=euro", timeout=10)
    assert r.status_code == 500
    assert wait_until(lambda: 'header value "\u20ac" is not latin-1' in raw_server.log()), \
        raw_server.log()[-2000:]


@pytest.mark.parametrize("code", [201, 404, 418, 503])
def test_status_passthrough(server, code):
    r = requests.get(f"{server.url}/status?code={code}", timeout=10)
    assert r.status_code == code
    assert r.text == f"status {code}"


def test_204_has_no_body_and_keeps_the_connection(server):
    with RawConn(server.port) as c:
        c.send(b"GET /status?code=204 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /say?text=after204 HTTP/1.1\r\nHost: t\r\n\r\n")
        first = c.read_response()
        second = c.read_response()
    assert first.status == 204
    assert second.status == 200 and second.body == b"after204"


# --- wsgi.file_wrapper -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 100_000, 5 * 1024 * 1024 + 3])
def test_file_wrapper_serves_the_file_without_python_reads(raw_server, tmp_path, size):
    readlog = tmp_path / "reads.log"
    closelog = tmp_path / "close.count"
    r = requests.get(
        f"{raw_server.url}/file?size={size}&readlog={readlog}&closelog={closelog}", timeout=30
    )
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(size)
    assert len(r.content) == size
    assert r.content == pattern_bytes(size)
    assert wait_until(lambda: closelog.exists() and closelog.read_text() == "1", 5), \
        "file_wrapper's file was not closed (close() not called)"
    assert not readlog.exists(), f"the file was read in Python: {readlog.read_text()[:200]}"


def test_file_wrapper_over_an_object_without_fileno(raw_server):
    size = 200_000
    r = requests.get(f"{raw_server.url}/file?size={size}&kind=bytesio", timeout=30)
    assert r.status_code == 200
    assert r.content == pattern_bytes(size)


def test_file_wrapper_behind_the_validator(server):
    # the validator hides the wrapper; porch must fall back to iterating it
    size = 300_000
    r = requests.get(f"{server.url}/file?size={size}", timeout=30)
    assert r.status_code == 200
    assert r.content == pattern_bytes(size)


# --- start_response and exc_info -------------------------------------------------------------


def test_exc_info_before_output_replaces_the_response(server):
    r = requests.get(server.url + "/exc-info?mode=before", timeout=10)
    assert r.status_code == 500
    assert r.text == "error page from the app"
    assert r.headers.get("X-Second") == "yes"
    assert "X-First" not in r.headers


def test_exc_info_after_output_reraises(server, tmp_path):
    log = tmp_path / "exc.log"
    with RawConn(server.port) as c:
        c.send(f"GET /exc-info?mode=after&file={log} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        try:
            r = c.read_response()
        except Exception:  # noqa: BLE001 - aborted before a head: also a visible failure
            r = None
    assert wait_until(log.exists, 5)
    assert log.read_text().split() == ["reraised"]
    # the client can tell the response failed: a 500, or a body cut short
    if r is not None:
        assert r.status == 500 or not r.complete, r
        assert b"should never be seen" not in r.body


def test_second_start_response_without_exc_info_is_an_error(server, tmp_path):
    log = tmp_path / "twice.log"
    requests.get(f"{server.url}/exc-info?mode=twice&file={log}", timeout=10)
    assert wait_until(log.exists, 5)
    assert log.read_text().startswith("raised"), log.read_text()


# --- errors -------------------------------------------------------------------------------------


def test_app_exception_gives_500_traceback_in_log_and_worker_lives(porch):
    p = porch("-w", "1", "wsgiapp:application")
    pid_before = requests.get(p.url + "/pid", timeout=10).json()["pid"]
    token = f"boom-{uuid.uuid4().hex}"
    r = requests.get(f"{p.url}/error?msg={token}", timeout=10)
    assert r.status_code == 500
    assert token not in r.text  # no traceback leaked to the client
    assert wait_until(lambda: token in p.log(), 5)
    log = p.log()
    assert "Traceback" in log
    assert f"RuntimeError: {token}" in log
    pid_after = requests.get(p.url + "/pid", timeout=10).json()["pid"]
    assert pid_after == pid_before
    assert p.worker_pids() == [pid_before]


def test_app_that_never_calls_start_response_gives_500(raw_server):
    r = requests.get(raw_server.url + "/no-start-response", timeout=10)
    assert r.status_code == 500
    assert requests.get(raw_server.url + "/say?text=alive", timeout=10).text == "alive"


# --- close() --------------------------------------------------------------------------------------


def _count(path) -> int:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return 0


def test_close_is_called_after_a_normal_response(server, tmp_path):
    counter = tmp_path / "close.count"
    r = requests.get(f"{server.url}/close?file={counter}", timeout=10)
    assert r.status_code == 200 and r.text == "closing-body"
    assert wait_until(lambda: _count(counter) == 1, 5), _count(counter)
    time.sleep(0.2)
    assert _count(counter) == 1  # exactly once


def test_close_is_called_for_head(server, tmp_path):
    counter = tmp_path / "close.count"
    r = requests.head(f"{server.url}/close?file={counter}", timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert wait_until(lambda: _count(counter) == 1, 5), _count(counter)


def test_close_is_called_when_the_iterable_raises(server, tmp_path):
    counter = tmp_path / "close.count"
    with RawConn(server.port) as c:
        c.send(f"GET /close?file={counter}&chunks=4&fail=1 HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        try:
            r = c.read_response()
            assert r.status == 500 or not r.complete, r
        except Exception:  # noqa: BLE001 - connection aborted: the client can tell too
            pass
    assert wait_until(lambda: _count(counter) == 1, 5), _count(counter)


def test_close_is_called_when_the_client_went_away(server, tmp_path):
    counter = tmp_path / "close.count"
    marker = tmp_path / "called"
    c = RawConn(server.port)
    c.send(
        f"GET /close?file={counter}&chunks=40&delay=0.05&marker={marker} HTTP/1.1\r\n"
        f"Host: t\r\n\r\n".encode()
    )
    assert wait_until(marker.exists, 5), "the app was never called"
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()  # reset, mid-response
    assert wait_until(lambda: _count(counter) == 1, 10), _count(counter)
    # and the server carries on
    assert requests.get(server.url + "/say?text=still-here", timeout=10).text == "still-here"


# --- threads ----------------------------------------------------------------------------------------


def test_multithread_flag_with_threads(porch):
    p = porch("-w", "1", "--threads", "4", "wsgiapp:application")
    env = get_env(p, "/env")
    assert env["wsgi.multithread"] == "True"


# --- last: the validator found nothing wrong on the server's side ---------------------------------


def test_validator_saw_no_spec_violation(server):
    """wsgiref.validate raises AssertionError on a server-side deviation (and complains when
    an iterable is garbage collected without close()); none of that may be in the log of the
    server every validated request above went through."""
    requests.get(server.url + "/say?text=flush", timeout=10)
    log = server.log()
    assert "garbage collected without being closed" not in log
    assert "AssertionError" not in log, log[log.find("AssertionError") - 2000:][:3000]
