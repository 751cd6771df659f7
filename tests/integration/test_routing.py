"""Routes hold for every spelling of a path: they match the percent-decoded path with dot
segments removed and slashes merged (as nginx matches locations on $uri), so a deny route
cannot be walked around, on app routes and on proxy routes alike."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from conftest import free_port, wait_for_port

DENIED_FILE = [
    "/files/internal/secret.txt",
    "/files/%69nternal/secret.txt",
    "/files/%69%6E%74%65%72%6E%61%6C/secret.txt",
    "/%66iles/internal/secret.txt",
    "/files/internal%2fsecret.txt",
    "/files/internal%2Fsecret.txt",
    "//files/internal/secret.txt",
    "/files//internal/secret.txt",
    "/files/./internal/secret.txt",
    "/./files/internal/secret.txt",
    "/files/public/../internal/secret.txt",
    "/files/public/%2e%2e/internal/secret.txt",
    "/files/public/%2E%2E%2Finternal/secret.txt",
    "/files/internal/./secret.txt",
]
DENIED_APP = ["/say?text=x", "/%73ay?text=x", "/%73%61%79?text=x", "//say?text=x", "/./say?text=x",
              "/x/../say?text=x", "/x/%2e%2e/say?text=x", "/say/.?text=x", "/say/?text=x",
              "/x/..%2fsay?text=x"]


def raw_status(port: int, target: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def site(porch_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream")
    (root / "files" / "internal").mkdir(parents=True)
    (root / "files" / "public").mkdir()
    (root / "files" / "internal" / "secret.txt").write_text("SECRET")
    (root / "files" / "public.txt").write_text("public")
    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "http.server", str(up_port), "--bind", "127.0.0.1",
                                 "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(up_port, upstream)
    port = free_port()
    cfg = tmp_path_factory.mktemp("cfg") / "porch.toml"
    cfg.write_text(f"""
[[listener]]
bind = "127.0.0.1:{port}"
[[listener.route]]
path = "/files/internal/"
return = 403
[[listener.route]]
path = "/files/"
proxy = "files"
[[listener.route]]
path = "/say"
return = 403
[[listener.route]]
path = "/"
app = true

[upstream.files]
servers = ["127.0.0.1:{up_port}"]
""")
    p = porch_module("-w", "1", "-c", cfg, "wsgiapp:application", bind=False)
    wait_for_port(port, p.proc)
    yield port
    upstream.terminate()
    upstream.wait(10)


def test_the_upstream_and_the_app_answer_what_is_not_denied(site):
    assert raw_status(site, "/files/public.txt") == 200
    assert raw_status(site, "/%66iles/public.txt") == 200
    assert raw_status(site, "/echo") == 200


@pytest.mark.parametrize("target", DENIED_FILE)
def test_a_deny_route_before_a_proxy_route_holds_for_every_spelling(site, target):
    assert raw_status(site, target) == 403


@pytest.mark.parametrize("target", DENIED_APP)
def test_a_deny_route_before_the_app_holds_for_every_spelling(site, target):
    assert raw_status(site, target) == 403


@pytest.mark.parametrize("target", ["/files/../../etc/passwd", "/%2e%2e/x", "/a%zz", "/a%00b"])
def test_paths_that_cannot_be_routed_are_400(site, target):
    assert raw_status(site, target) == 400
