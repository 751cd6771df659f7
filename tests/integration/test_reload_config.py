"""SIGHUP re-reads porch.toml: the next workers import what it names now."""

import signal
import time

import requests

from conftest import free_port, wait_for_port


def test_hup_rereads_the_app_setting(porch, tmp_path):
    (tmp_path / "app_one.py").write_text(
        "def application(e, sr):\n    sr('200 OK', [('Content-Type', 'text/plain')])\n    return [b'one']\n")
    (tmp_path / "app_two.py").write_text(
        "def application(e, sr):\n    sr('200 OK', [('Content-Type', 'text/plain')])\n    return [b'two']\n")
    port = free_port()
    cfg = tmp_path / "porch.toml"
    body = f'workers = 1\npythonpath = ["{tmp_path}"]\nbind = ["127.0.0.1:{port}"]\n'
    cfg.write_text('app = "app_one:application"\n' + body)
    p = porch("-c", cfg, bind=False)
    wait_for_port(port, p.proc)
    url = f"http://127.0.0.1:{port}/"
    assert requests.get(url, timeout=5).text == "one"

    # A broken file changes nothing.
    cfg.write_text('app = "app_two:application"\nworkerz = 1\n' + body)
    p.signal(signal.SIGHUP)
    time.sleep(1)
    assert "configuration error" in p.log()
    assert requests.get(url, timeout=5).text == "one"

    cfg.write_text('app = "app_two:application"\n' + body)
    p.signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and requests.get(url, timeout=5).text != "two":
        time.sleep(0.1)
    assert requests.get(url, timeout=5).text == "two"
    assert "new settings for workers: app" in p.log()
