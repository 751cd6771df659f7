"""Static files (``--static PREFIX=DIR``): content types, validators and 304s, ranges,
precompressed siblings, caching headers, HEAD, large files, and no way out of the root.

Every exchange goes over a real socket to the release binary; traversal attempts are
sent byte for byte with :class:`RawConn` so no client library normalises them first.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from email.utils import formatdate

import pytest

from conftest import RawConn

SECRET = b"TOP-SECRET-CONTENT-outside-the-root\n"
CSS = b"body { color: #123456; }\n" * 40
JS_OLD = b"console.log('stale precompressed sibling must not win');\n" * 10
HASHED = "app.3f2a9c1b7d4e.css"
BIG_SIZE = 10 * 1024 * 1024
RANGE_DATA = bytes(range(256)) * 4  # 1024 bytes


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("static")
    (base / "secret.txt").write_bytes(SECRET)
    root = base / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello static\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "data.bin").write_bytes(RANGE_DATA)
    (root / "app.css").write_bytes(CSS)
    (root / "app.css.gz").write_bytes(gzip.compress(CSS, mtime=0))
    # Not real brotli (the stdlib has none): the test only checks which file is sent.
    (root / "app.css.br").write_bytes(b"BROTLI:" + CSS[:50])
    (root / HASHED).write_bytes(CSS)
    (root / (HASHED + ".gz")).write_bytes(gzip.compress(CSS, mtime=0))
    (root / "old.js").write_bytes(JS_OLD)
    (root / "old.js.gz").write_bytes(gzip.compress(b"stale"))
    past = time.time() - 3600
    os.utime(root / "old.js.gz", (past, past))
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    (root / "logo.png.gz").write_bytes(gzip.compress(b"never for png"))
    (root / ".env").write_bytes(b"SECRET_KEY=dotfile\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"[core] dotdir\n")
    (root / "sub").mkdir()
    (root / "sub" / "page.html").write_bytes(b"<p>sub page</p>\n")
    (root / "sub" / "index.html").write_bytes(b"<p>index</p>\n")
    os.symlink(base / "secret.txt", root / "abs-link-out")
    os.symlink("../secret.txt", root / "rel-link-out")
    os.symlink("../../secret.txt", root / "sub" / "deep-link-out")
    os.symlink(base, root / "dir-link-out")
    os.symlink("hello.txt", root / "link-in")
    os.symlink("../hello.txt", root / "sub" / "up-and-in")
    big = os.urandom(BIG_SIZE)
    (root / "big.bin").write_bytes(big)
    return {"base": base, "root": root, "big_sha": hashlib.sha256(big).hexdigest(), "big": big}


@pytest.fixture(scope="module")
def server(porch_module, tree):
    return porch_module("-w", "1", "--static", f"/static/={tree['root']}", "wsgiapp:application")


def request(port, path, *, method="GET", headers=(), timeout=10.0):
    """One request on a fresh connection; the parsed response."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers, "Connection: close"]
    with RawConn(port, timeout=timeout) as c:
        c.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        r = c.read_response(head=(method == "HEAD"), timeout=timeout)
        assert r.complete, r
        return r


# --- plain GET, HEAD, methods ---------------------------------------------------------


def test_small_file_with_type_validators_and_caching(server):
    r = request(server.port, "/static/hello.txt")
    assert r.status == 200
    assert r.body == b"hello static\n"
    assert r.header("content-type") == "text/plain; charset=utf-8"
    assert r.header("content-length") == str(len(b"hello static\n"))
    assert r.header("etag").startswith('"') and r.header("etag").endswith('"')
    assert r.header("last-modified").endswith(" GMT")
    assert r.header("accept-ranges") == "bytes"
    assert r.header("cache-control") == "public, max-age=60"
    assert r.header("vary") == "Accept-Encoding"
    assert r.header("x-content-type-options") == "nosniff"
    assert r.header("content-encoding") is None


def test_content_types(server):
    assert request(server.port, "/static/app.css").header("content-type") == "text/css; charset=utf-8"
    assert request(server.port, "/static/logo.png").header("content-type") == "image/png"
    assert request(server.port, "/static/data.bin").header("content-type") == "application/octet-stream"
    assert request(server.port, "/static/sub/page.html").header("content-type") == "text/html; charset=utf-8"


def test_empty_file(server):
    r = request(server.port, "/static/empty.txt")
    assert r.status == 200 and r.body == b"" and r.header("content-length") == "0"


def test_head_has_the_get_headers_and_no_body(server):
    get = request(server.port, "/static/app.css")
    with RawConn(server.port) as c:
        c.send(b"HEAD /static/app.css HTTP/1.1\r\nHost: t\r\n\r\n")
        head = c.read_response(head=True)
        assert head.status == 200
        assert head.header("content-length") == str(len(CSS))
        for h in ("etag", "last-modified", "content-type", "cache-control", "vary"):
            assert head.header(h) == get.header(h), h
        # Nothing of a body followed the head: the next response parses cleanly.
        c.send(b"GET /static/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        nxt = c.read_response()
        assert nxt.status == 200 and nxt.body == b"hello static\n"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_405_with_allow(server, method):
    r = request(server.port, "/static/hello.txt", method=method, headers=["Content-Length: 0"])
    assert r.status == 405
    assert r.header("allow") == "GET, HEAD"


# --- conditional requests -------------------------------------------------------------


def test_if_none_match(server):
    first = request(server.port, "/static/hello.txt")
    etag = first.header("etag")
    for value in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        r = request(server.port, "/static/hello.txt", headers=[f"If-None-Match: {value}"])
        assert r.status == 304, value
        assert r.body == b""
        assert r.header("etag") == etag
        assert r.header("cache-control") == "public, max-age=60"
        assert r.header("vary") == "Accept-Encoding"
    r = request(server.port, "/static/hello.txt", headers=['If-None-Match: "other"'])
    assert r.status == 200 and r.body == b"hello static\n"


def test_if_modified_since(server):
    lm = request(server.port, "/static/hello.txt").header("last-modified")
    assert request(server.port, "/static/hello.txt", headers=[f"If-Modified-Since: {lm}"]).status == 304
    later = formatdate(time.time() + 86400, usegmt=True)
    assert request(server.port, "/static/hello.txt", headers=[f"If-Modified-Since: {later}"]).status == 304
    long_ago = formatdate(0, usegmt=True)
    assert request(server.port, "/static/hello.txt", headers=[f"If-Modified-Since: {long_ago}"]).status == 200
    # If-None-Match decides alone when both are present.
    r = request(
        server.port,
        "/static/hello.txt",
        headers=['If-None-Match: "other"', f"If-Modified-Since: {lm}"],
    )
    assert r.status == 200


def test_if_match_failure_is_412(server):
    r = request(server.port, "/static/hello.txt", headers=['If-Match: "other"'])
    assert r.status == 412
    etag = request(server.port, "/static/hello.txt").header("etag")
    assert request(server.port, "/static/hello.txt", headers=[f"If-Match: {etag}"]).status == 200


def test_etag_changes_when_the_file_does(server, tree):
    path = tree["root"] / "changing.txt"
    path.write_bytes(b"one")
    first = request(server.port, "/static/changing.txt").header("etag")
    path.write_bytes(b"two!")
    later = time.time() + 5
    os.utime(path, (later, later))
    r = request(server.port, "/static/changing.txt", headers=[f"If-None-Match: {first}"])
    assert r.status == 200 and r.body == b"two!"
    assert r.header("etag") != first


# --- ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,first,last",
    [("0-99", 0, 99), ("1000-", 1000, 1023), ("-10", 1014, 1023), ("500-5000", 500, 1023), ("7-7", 7, 7)],
)
def test_single_range(server, spec, first, last):
    r = request(server.port, "/static/data.bin", headers=[f"Range: bytes={spec}"])
    assert r.status == 206
    assert r.header("content-range") == f"bytes {first}-{last}/1024"
    assert r.header("content-length") == str(last - first + 1)
    assert r.body == RANGE_DATA[first : last + 1]


@pytest.mark.parametrize("spec", ["1024-", "5000-6000", "-0"])
def test_unsatisfiable_range_is_416(server, spec):
    r = request(server.port, "/static/data.bin", headers=[f"Range: bytes={spec}"])
    assert r.status == 416
    assert r.header("content-range") == "bytes */1024"


@pytest.mark.parametrize("value", ["bytes=0-1,5-6", "bytes=9-3", "items=0-5", "bytes=abc"])
def test_multi_or_invalid_ranges_get_the_whole_file(server, value):
    r = request(server.port, "/static/data.bin", headers=[f"Range: {value}"])
    assert r.status == 200
    assert r.body == RANGE_DATA
    assert r.header("content-range") is None


def test_if_range(server):
    first = request(server.port, "/static/data.bin")
    etag, lm = first.header("etag"), first.header("last-modified")
    r = request(server.port, "/static/data.bin", headers=["Range: bytes=0-9", f"If-Range: {etag}"])
    assert r.status == 206 and r.body == RANGE_DATA[:10]
    r = request(server.port, "/static/data.bin", headers=["Range: bytes=0-9", f"If-Range: {lm}"])
    assert r.status == 206
    r = request(server.port, "/static/data.bin", headers=["Range: bytes=0-9", 'If-Range: "old"'])
    assert r.status == 200 and r.body == RANGE_DATA


def test_head_ignores_range(server):
    with RawConn(server.port) as c:
        c.send(b"HEAD /static/data.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\n\r\n")
        r = c.read_response(head=True)
    assert r.status == 200 and r.header("content-length") == "1024"


# --- precompressed siblings -----------------------------------------------------------


def test_gzip_sibling(server):
    r = request(server.port, "/static/app.css", headers=["Accept-Encoding: gzip, deflate"])
    assert r.status == 200
    assert r.header("content-encoding") == "gzip"
    assert r.header("vary") == "Accept-Encoding"
    assert r.header("content-type") == "text/css; charset=utf-8"
    assert gzip.decompress(r.body) == CSS
    assert r.header("content-length") == str(len(r.body))


def test_br_is_preferred_and_q_values_decide(server, tree):
    br = (tree["root"] / "app.css.br").read_bytes()
    r = request(server.port, "/static/app.css", headers=["Accept-Encoding: gzip, deflate, br"])
    assert r.header("content-encoding") == "br" and r.body == br
    r = request(server.port, "/static/app.css", headers=["Accept-Encoding: br;q=0.5, gzip;q=0.9"])
    assert r.header("content-encoding") == "gzip"
    r = request(server.port, "/static/app.css", headers=["Accept-Encoding: br;q=0, gzip;q=0"])
    assert r.header("content-encoding") is None and r.body == CSS
    r = request(server.port, "/static/app.css")
    assert r.header("content-encoding") is None and r.body == CSS
    assert r.header("vary") == "Accept-Encoding"


def test_each_encoding_has_its_own_etag_and_304(server):
    plain = request(server.port, "/static/app.css").header("etag")
    gz = request(server.port, "/static/app.css", headers=["Accept-Encoding: gzip"]).header("etag")
    assert plain != gz
    r = request(server.port, "/static/app.css", headers=["Accept-Encoding: gzip", f"If-None-Match: {gz}"])
    assert r.status == 304 and r.header("etag") == gz
    r = request(server.port, "/static/app.css", headers=[f"If-None-Match: {gz}"])
    assert r.status == 200 and r.body == CSS


def test_stale_sibling_and_incompressible_types_are_not_used(server):
    r = request(server.port, "/static/old.js", headers=["Accept-Encoding: gzip"])
    assert r.header("content-encoding") is None and r.body == JS_OLD
    r = request(server.port, "/static/logo.png", headers=["Accept-Encoding: gzip, br"])
    assert r.header("content-encoding") is None
    assert r.header("vary") is None


def test_range_of_the_compressed_representation(server):
    gz = request(server.port, "/static/app.css", headers=["Accept-Encoding: gzip"]).body
    r = request(server.port, "/static/app.css", headers=["Accept-Encoding: gzip", "Range: bytes=0-9"])
    assert r.status == 206 and r.body == gz[:10]
    assert r.header("content-range") == f"bytes 0-9/{len(gz)}"


# --- caching of content-hashed names --------------------------------------------------


def test_hashed_names_are_immutable(server):
    immutable = "public, max-age=31536000, immutable"
    r = request(server.port, f"/static/{HASHED}")
    assert r.status == 200 and r.header("cache-control") == immutable
    r = request(server.port, f"/static/{HASHED}", headers=["Accept-Encoding: gzip"])
    assert r.header("content-encoding") == "gzip" and r.header("cache-control") == immutable
    r = request(server.port, f"/static/{HASHED}.gz")
    assert r.header("cache-control") == immutable
    assert r.header("content-type") == "application/gzip" and r.header("content-encoding") is None
    assert request(server.port, "/static/app.css").header("cache-control") == "public, max-age=60"


# --- never outside the root -----------------------------------------------------------

TRAVERSALS = [
    "/static/../secret.txt",
    "/static/../../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/..%2fsecret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/sub/..%2f..%2fsecret.txt",
    "/static/sub/%2e%2e/%2e%2e/secret.txt",
    "/static/..%5csecret.txt",
    "/static/%5c..%5csecret.txt",
    "/static/abs-link-out",
    "/static/rel-link-out",
    "/static/sub/deep-link-out",
    "/static/dir-link-out/secret.txt",
    "/static/../../../../../../etc/passwd",
    "/static//etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_refused(server, path):
    with RawConn(server.port) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        c.wait_closed(5)
        raw = c.buf
    # 404 from the static route; 400 when the path climbs above the root before routing
    # (as nginx answers).
    assert raw.startswith((b"HTTP/1.1 404 ", b"HTTP/1.1 400 ")), raw[:200]
    assert SECRET not in raw and b"root:" not in raw


@pytest.mark.parametrize("path", ["/static/%00", "/static/hello.txt%00.png", "/static/a%zz", "/static/%c3%28"])
def test_nul_and_bad_encoding_are_400(server, path):
    with RawConn(server.port) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        c.wait_closed(5)
        raw = c.buf
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:200]


def test_symlinks_inside_the_root_work(server):
    assert request(server.port, "/static/link-in").body == b"hello static\n"
    assert request(server.port, "/static/sub/up-and-in").body == b"hello static\n"


@pytest.mark.parametrize("path", ["/static/.env", "/static/.git/config", "/static/%2eenv", "/static/sub/../.env"])
def test_dotfiles_are_404(server, path):
    r = request(server.port, path)
    assert r.status == 404
    assert b"SECRET_KEY" not in r.body and b"dotdir" not in r.body


@pytest.mark.parametrize("path", ["/static/", "/static/sub/", "/static/hello.txt/"])
def test_no_directory_listing_or_index_by_default(server, path):
    r = request(server.port, path)
    assert r.status == 404
    assert b"page.html" not in r.body


def test_a_directory_without_its_slash_is_redirected_to_it_as_nginx_does(server):
    r = request(server.port, "/static/sub?x=1")
    assert r.status == 301 and r.header("location") == "/static/sub/?x=1", r
    assert b"page.html" not in r.body


def test_percent_encoded_names_and_merged_slashes(server, tree):
    (tree["root"] / "with space.txt").write_bytes(b"spaced")
    assert request(server.port, "/static/with%20space.txt").body == b"spaced"
    assert request(server.port, "/static//sub//page.html").body == b"<p>sub page</p>\n"


# --- the app still gets everything else ----------------------------------------------


def test_requests_outside_the_prefix_reach_the_app(server, tmp_path):
    marker = tmp_path / "marker"
    r = request(server.port, f"/say?text=from-app&marker={marker}")
    assert r.status == 200 and r.body == b"from-app"
    r = request(server.port, f"/staticfoo/hello.txt?marker={marker}")
    assert r.body.startswith(b"not found: /staticfoo/hello.txt")
    assert marker.read_text().splitlines() == ["called GET /say", "called GET /staticfoo/hello.txt"]
    # A static hit never reaches the app.
    assert request(server.port, f"/static/hello.txt?marker={marker}").body == b"hello static\n"
    assert len(marker.read_text().splitlines()) == 2


# --- large files ----------------------------------------------------------------------


def test_ten_mib_file_arrives_intact(server, tree):
    r = request(server.port, "/static/big.bin", timeout=60)
    assert r.status == 200
    assert r.header("content-length") == str(BIG_SIZE)
    assert len(r.body) == BIG_SIZE
    assert hashlib.sha256(r.body).hexdigest() == tree["big_sha"]


def test_range_across_chunks_of_a_large_file(server, tree):
    first, last = 100_000, 5_000_000
    r = request(server.port, "/static/big.bin", headers=[f"Range: bytes={first}-{last}"], timeout=60)
    assert r.status == 206
    assert r.header("content-range") == f"bytes {first}-{last}/{BIG_SIZE}"
    assert r.body == tree["big"][first : last + 1]


def test_mixed_responses_keep_one_connection_in_step(server, tree):
    with RawConn(server.port, timeout=30) as c:
        etag = None
        for _ in range(2):
            c.send(b"GET /static/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=-70000\r\n\r\n")
            r = c.read_response()
            assert r.status == 206 and r.body == tree["big"][-70000:]
            c.send(b"GET /static/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            r = c.read_response()
            etag = r.header("etag")
            assert r.body == b"hello static\n"
            c.send(f"GET /static/hello.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n".encode())
            assert c.read_response().status == 304
            c.send(b"HEAD /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            assert c.read_response(head=True).header("content-length") == str(BIG_SIZE)
            c.send(b"GET /static/nope HTTP/1.1\r\nHost: t\r\n\r\n")
            assert c.read_response().status == 404
        assert not c.wait_closed(0.3)


def test_a_client_that_stops_reading_does_not_stop_others(server, tree):
    """A download left unread holds only its own connection."""
    with RawConn(server.port, timeout=10) as stuck:
        stuck.send(b"GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)
        r = request(server.port, "/static/hello.txt")
        assert r.body == b"hello static\n"


@pytest.mark.parametrize("path", ["/static/./hello.txt", "/static//hello.txt", "/static/sub/../hello.txt",
                                  "/static/sub/%2e%2e/hello.txt", "/static/./sub/./../hello.txt"])
def test_dot_segments_resolve_within_the_root_as_rfc_3986_says(server, path):
    r = request(server.port, path)
    assert r.status == 200, (path, r)
    assert r.body and r.body == request(server.port, "/static/hello.txt").body
