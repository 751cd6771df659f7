"""The static-file cache: answers come from memory, and every change on disk is seen.

Files are cached once their modification and change times are a second old, so each test
writes its files, waits for them to settle, gets them once (which fills the cache, as
``porch_static_cache_hits_total`` shows on the next request), then changes the disk and
checks the very next answer. Real sockets, one porch for the module, loopback only.
"""

from __future__ import annotations

import gzip
import os
import time

import pytest
import requests

from conftest import free_port, run_porch, wait_until

SETTLE = 1.2  # the cache keeps a file's bytes once its times are 1 s old


@pytest.fixture(scope="module")
def site(porch_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache-root")
    admin = free_port()
    p = porch_module("-w", "1", "--admin-bind", f"127.0.0.1:{admin}",
                     "--static", f"/static/={root}", "wsgiapp:application")
    return {"root": root, "url": p.url, "admin": admin}


def metric(site, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{site['admin']}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def get(site, path, **headers):
    return requests.get(site["url"] + "/static/" + path, headers=headers, timeout=5)


def cached(site, path, body: bytes, **headers):
    """Gets ``path`` until an answer came from the cache; checks every body on the way."""
    hits = metric(site, "porch_static_cache_hits_total")
    for _ in range(3):
        r = get(site, path, **headers)
        assert r.status_code == 200 and r.content == body, (r.status_code, r.content[:80])
        now = metric(site, "porch_static_cache_hits_total")
        if now > hits:
            return r
        hits = now
    raise AssertionError(f"{path} never answered from the cache")


def fresh_dir(site, name):
    d = site["root"] / name
    d.mkdir()
    return d


def test_modified_in_place_same_size_and_mtime_put_back(site):
    d = fresh_dir(site, "inplace")
    (d / "a.txt").write_bytes(b"first version\n")
    time.sleep(SETTLE)
    r1 = cached(site, "inplace/a.txt", b"first version\n")
    st = os.stat(d / "a.txt")
    # Same size, written in place (same inode), modification time put back: only the
    # change time tells.
    with open(d / "a.txt", "r+b") as f:
        f.write(b"SECOND version\n"[:14])
    os.utime(d / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(d / "a.txt").st_ino == st.st_ino
    assert get(site, "inplace/a.txt").content == b"SECOND version"
    # And with a new modification time, the validators change too.
    (d / "a.txt").write_bytes(b"third version\n")
    r3 = get(site, "inplace/a.txt")
    assert r3.content == b"third version\n"
    assert r3.headers["ETag"] != r1.headers["ETag"]
    # Once settled, the new content is what the cache holds.
    time.sleep(SETTLE)
    cached(site, "inplace/a.txt", b"third version\n")


def test_replaced_by_rename_deleted_and_new(site):
    d = fresh_dir(site, "swap")
    (d / "app.js").write_bytes(b"console.log(1);\n")
    time.sleep(SETTLE)
    cached(site, "swap/app.js", b"console.log(1);\n")
    (d / "app.js.tmp").write_bytes(b"console.log(2);\n")
    os.rename(d / "app.js.tmp", d / "app.js")
    assert get(site, "swap/app.js").content == b"console.log(2);\n"

    time.sleep(SETTLE)
    cached(site, "swap/app.js", b"console.log(2);\n")
    os.unlink(d / "app.js")
    assert get(site, "swap/app.js").status_code == 404
    assert get(site, "swap/app.js").status_code == 404

    assert get(site, "swap/new.js").status_code == 404
    (d / "new.js").write_bytes(b"new\n")
    assert get(site, "swap/new.js").content == b"new\n"
    (d / "app.js").write_bytes(b"back\n")
    assert get(site, "swap/app.js").content == b"back\n"


def test_truncated_and_conditional_requests(site):
    d = fresh_dir(site, "cond")
    (d / "c.css").write_bytes(b"a{}" * 100)
    time.sleep(SETTLE)
    r = cached(site, "cond/c.css", b"a{}" * 100)
    etag = r.headers["ETag"]
    # 304 and ranges from the cache.
    assert get(site, "cond/c.css", **{"If-None-Match": etag}).status_code == 304
    part = get(site, "cond/c.css", Range="bytes=3-5")
    assert part.status_code == 206 and part.content == b"a{}"
    assert part.headers["Content-Range"] == "bytes 3-5/300"
    assert get(site, "cond/c.css", Range="bytes=900-").status_code == 416
    head = requests.head(site["url"] + "/static/cond/c.css", timeout=5)
    assert head.headers["Content-Length"] == "300" and head.content == b""
    # Truncated: the old ETag no longer matches, the new length is sent.
    with open(d / "c.css", "r+b") as f:
        f.truncate(6)
    r2 = get(site, "cond/c.css", **{"If-None-Match": etag})
    assert r2.status_code == 200 and r2.content == b"a{}a{}"
    assert r2.headers["Content-Length"] == "6"


def test_directory_renamed_or_swapped(site, tmp_path):
    d = fresh_dir(site, "dirs")
    (d / "v1").mkdir()
    (d / "v1" / "x.txt").write_bytes(b"one\n")
    (d / "v2").mkdir()
    (d / "v2" / "x.txt").write_bytes(b"two\n")
    os.symlink("v1", d / "current")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_bytes(b"secret\n")
    time.sleep(SETTLE)
    cached(site, "dirs/current/x.txt", b"one\n")
    # A deploy swaps the symlink: the new tree is served at once.
    os.symlink("v2", d / "next")
    os.rename(d / "next", d / "current")
    assert get(site, "dirs/current/x.txt").content == b"two\n"
    time.sleep(SETTLE)
    cached(site, "dirs/current/x.txt", b"two\n")
    # A directory renamed away and another put in its place.
    os.rename(d / "v2", d / "v2-old")
    (d / "v2").mkdir()
    (d / "v2" / "x.txt").write_bytes(b"three\n")
    assert get(site, "dirs/current/x.txt").content == b"three\n"
    # Pointed outside the root: refused, cached or not.
    os.symlink(outside, d / "v3")
    os.symlink("v3", d / "next")
    os.rename(d / "next", d / "current")
    assert get(site, "dirs/current/x.txt").status_code == 404
    # Removed altogether.
    os.unlink(d / "current")
    assert get(site, "dirs/current/x.txt").status_code == 404


def test_precompressed_sibling_added_and_removed(site):
    d = fresh_dir(site, "gz")
    css = b"body { color: red; }\n" * 50
    (d / "site.css").write_bytes(css)
    time.sleep(SETTLE)
    r = cached(site, "gz/site.css", css, **{"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in r.headers
    # Added: used within a second (absence is remembered that long).
    (d / "site.css.gz").write_bytes(gzip.compress(css, mtime=0))

    def gz_sent():
        r = get(site, "gz/site.css", **{"Accept-Encoding": "gzip"})
        assert r.content == css  # requests decodes it
        return r.headers.get("Content-Encoding") == "gzip"

    assert wait_until(gz_sent, timeout=5, interval=0.1)
    # A client that does not accept gzip still gets the file itself.
    plain = get(site, "gz/site.css", **{"Accept-Encoding": "identity"})
    assert plain.content == css and "Content-Encoding" not in plain.headers
    # Removed: the next request falls back.
    os.unlink(d / "site.css.gz")
    r = get(site, "gz/site.css", **{"Accept-Encoding": "gzip"})
    assert r.content == css and "Content-Encoding" not in r.headers
    # A sibling older than the file is never sent.
    (d / "site.css.gz").write_bytes(gzip.compress(b"stale", mtime=0))
    past = time.time() - 3600
    os.utime(d / "site.css.gz", (past, past))
    time.sleep(SETTLE)
    r = get(site, "gz/site.css", **{"Accept-Encoding": "gzip"})
    assert r.content == css and "Content-Encoding" not in r.headers


def test_cache_holds_bytes_within_its_bounds(site):
    d = fresh_dir(site, "bounds")
    big = os.urandom(300 * 1024)  # above the largest cached file (256 KiB)
    (d / "big.bin").write_bytes(big)
    (d / "small.bin").write_bytes(b"s" * 1000)
    time.sleep(SETTLE)
    before = metric(site, "porch_static_cache_bytes")
    cached(site, "bounds/small.bin", b"s" * 1000)
    assert metric(site, "porch_static_cache_bytes") >= before + 1000
    hits = metric(site, "porch_static_cache_hits_total")
    for _ in range(2):
        assert get(site, "bounds/big.bin").content == big
    assert metric(site, "porch_static_cache_hits_total") == hits, "large files stream from disk"


def test_cache_off_and_bad_settings(porch, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.txt").write_bytes(b"f\n")
    cfg = tmp_path / "porch.toml"
    cfg.write_text("static_cache_memory = 0\n")
    admin = free_port()
    p = porch("-c", cfg, "--admin-bind", f"127.0.0.1:{admin}",
              "--static", f"/static/={root}", "wsgiapp:application")
    time.sleep(SETTLE)
    for _ in range(3):
        r = requests.get(p.url + "/static/f.txt", timeout=5)
        assert r.content == b"f\n"
    text = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).text
    assert "porch_static_cache_hits_total 0" in text

    for key, value in [("static_cache_entries", 99999999), ("static_cache_memory", 1 << 41)]:
        cfg.write_text(f"{key} = {value}\n")
        out = run_porch(["-c", cfg, "--check-config", "wsgiapp:application"])
        assert out.returncode != 0
        assert key in out.stderr and "turn the static-file cache off" in out.stderr, out.stderr
