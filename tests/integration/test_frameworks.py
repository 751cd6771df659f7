"""Real frameworks run unchanged: a small Flask app and a minimal Django project."""

from __future__ import annotations

import hashlib
import os
import sys

import pytest
import requests

from conftest import RawConn


# Flask and Django come from the test virtualenv (tests/requirements.txt), given to porch
# the way users do it.
if sys.prefix == sys.base_prefix:
    pytest.skip("run the tests from the test virtualenv (scripts/test does)", allow_module_level=True)
VENV = ["--venv", sys.prefix]


@pytest.fixture(scope="module")
def flask_server(porch_module):
    return porch_module("-w", "2", *VENV, "flaskapp:app")


@pytest.fixture(scope="module")
def django_server(porch_module):
    return porch_module("-w", "2", *VENV, "djproject.wsgi:application")


# --- Flask ---------------------------------------------------------------------------------------


def test_flask_get(flask_server):
    r = requests.get(flask_server.url + "/hello", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"message": "hello from flask", "path": "/hello", "script_root": ""}


def test_flask_json_and_form(flask_server):
    r = requests.post(flask_server.url + "/json", json={"a": [1, 2, "é"]}, timeout=10)
    assert r.status_code == 200
    assert r.json()["received"] == {"a": [1, 2, "é"]}
    r = requests.post(flask_server.url + "/form", data={"name": "porch", "x": "a&b=c"}, timeout=10)
    assert r.json()["form"] == {"name": "porch", "x": "a&b=c"}


def test_flask_multipart_upload(flask_server):
    data = os.urandom(2 * 1024 * 1024)
    r = requests.post(flask_server.url + "/upload", files={"file": ("blob.bin", data)},
                      data={"note": "hi"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"filename": "blob.bin", "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(), "note": "hi"}


def test_flask_cookies_and_404(flask_server):
    r = requests.get(flask_server.url + "/cookies", cookies={"k": "v", "k2": "v2"}, timeout=10)
    assert r.json()["cookies"] == {"k": "v", "k2": "v2"}
    assert r.cookies.get("served") == "flask"
    r = requests.get(flask_server.url + "/nope", timeout=10)
    assert r.status_code == 404 and r.json() == {"error": "not found"}


def test_flask_external_url_uses_the_host(flask_server):
    r = requests.get(flask_server.url + "/url", timeout=10)
    assert r.json()["url"] == f"http://127.0.0.1:{flask_server.port}/hello"


# --- Django ----------------------------------------------------------------------------------------


def test_django_json_view(django_server):
    r = requests.get(django_server.url + "/api/hello/?q=1", timeout=10)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["message"] == "hello from django"
    assert data["path"] == "/api/hello/"
    assert data["reverse"] == "/api/hello/"
    assert data["absolute"] == f"http://127.0.0.1:{django_server.port}/api/hello/?q=1"
    assert data["query"] == {"q": "1"}


def test_django_append_slash_redirect(django_server):
    r = requests.get(django_server.url + "/api/hello", timeout=10, allow_redirects=False)
    assert r.status_code == 301
    assert r.headers["Location"].endswith("/api/hello/")


def test_django_reads_a_json_post_body(django_server):
    r = requests.post(django_server.url + "/api/echo/", json={"n": 42}, timeout=10)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["json"] == {"n": 42}
    assert data["length"] == len(b'{"n": 42}')


def test_django_reads_a_form_post(django_server):
    r = requests.post(django_server.url + "/api/echo/", data={"a": "1", "b": "two"}, timeout=10)
    assert r.json()["post"] == {"a": "1", "b": "two"}


def test_django_reads_a_chunked_upload(django_server):
    # Django reads exactly CONTENT_LENGTH bytes: without it a chunked body would look empty
    pieces = [b"x" * 1000, b"y" * 70000, b"z"]
    body = b"".join(pieces)
    r = requests.post(django_server.url + "/api/echo/", data=iter(pieces),
                      headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["length"] == len(body)
    assert data["sha256"] == hashlib.sha256(body).hexdigest()
    assert data["content_length"] == str(len(body))


def test_django_big_upload(django_server):
    body = os.urandom(20 * 1024 * 1024)
    r = requests.post(django_server.url + "/api/echo/", data=body,
                      headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert r.status_code == 200
    assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_django_under_a_script_name(porch):
    p = porch("-w", "1", *VENV, "djproject.wsgi:application", env={"SCRIPT_NAME": "/site"})
    r = requests.get(p.url + "/site/api/hello/", timeout=10)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["path"] == "/site/api/hello/"
    assert data["path_info"] == "/api/hello/"
    assert data["reverse"] == "/site/api/hello/"


def test_django_keep_alive(django_server):
    with RawConn(django_server.port) as c:
        for _ in range(3):
            c.send(b"GET /api/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            r = c.read_response()
            assert r.status == 200
