"""X-Accel-Redirect: the app names a file, porch serves it from an internal static route."""

import hashlib
import os
import textwrap

import requests


def config(tmp_path, port, protected):
    cfg = tmp_path / "porch.toml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            app = "accel_app:application"
            workers = 1
            [[listener]]
            bind = "127.0.0.1:{port}"
            [[listener.route]]
            path = "/protected/"
            static = "{protected}"
            internal = true
            cache_control = "private, max-age=5"
            [[listener.route]]
            path = "/"
            app = true
            """
        )
    )
    return cfg


def test_app_hands_a_file_to_porch(porch, tmp_path):
    from conftest import free_port, wait_for_port

    protected = tmp_path / "protected"
    protected.mkdir()
    data = os.urandom(300_000)
    (protected / "report.bin").write_bytes(data)
    port = free_port()
    p = porch("-c", config(tmp_path, port, protected), bind=False)
    wait_for_port(port, p.proc)
    base = f"http://127.0.0.1:{port}"

    r = requests.get(f"{base}/download/report.bin", timeout=10)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert r.headers["Content-Disposition"] == 'attachment; filename="report.bin"'
    assert r.headers["Set-Cookie"] == "seen=1"
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert "ETag" in r.headers
    assert r.headers["Cache-Control"] == "private, max-age=5"

    # Ranges and conditionals work on the redirected file.
    r = requests.get(f"{base}/download/report.bin", headers={"Range": "bytes=10-19"}, timeout=10)
    assert r.status_code == 206 and r.content == data[10:20]
    etag = requests.head(f"{base}/download/report.bin", timeout=10).headers["ETag"]
    r = requests.get(f"{base}/download/report.bin", headers={"If-None-Match": etag}, timeout=10)
    assert r.status_code == 304

    # The internal route is not reachable directly, and a missing file is a 404.
    assert requests.get(f"{base}/protected/report.bin", timeout=10).status_code == 404
    assert requests.get(f"{base}/download/missing.bin", timeout=10).status_code == 404
    # Traversal through the app's header is refused like any other.
    assert requests.get(f"{base}/download/..%2f..%2fetc%2fpasswd", timeout=10).status_code in (400, 404)
    assert requests.get(f"{base}/other", timeout=10).text == "app:/other"


def test_route_options_are_validated(tmp_path):
    import subprocess
    from conftest import PORCH_BIN

    cfg = tmp_path / "bad.toml"
    cfg.write_text('app = "accel_app:application"\n[[listener]]\nbind = "127.0.0.1:1"\n[[listener.route]]\npath = "/"\napp = true\nindex = "index.html"\n')
    out = subprocess.run([str(PORCH_BIN), "-c", str(cfg), "--check-config"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "index" in out.stderr and "static" in out.stderr and "line 4" in out.stderr, out.stderr
