"""The admin listener: /healthz for probes, /metrics that move as requests flow."""

import re

import requests

from conftest import RawConn, free_port


def metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" ([0-9.e+-]+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.group(1))
    return 0.0


def test_metrics_follow_the_traffic(porch, tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.txt").write_text("hello")
    admin = free_port()
    p = porch("-w", "1", "--admin-bind", f"127.0.0.1:{admin}", "--static", f"/static/={static}", "wsgiapp:application")
    murl = f"http://127.0.0.1:{admin}/metrics"
    assert requests.get(f"http://127.0.0.1:{admin}/healthz", timeout=5).status_code == 200
    before = requests.get(murl, timeout=5).text

    for _ in range(5):
        assert requests.get(p.url + "/say?text=hi", timeout=5).status_code == 200
    for _ in range(3):
        assert requests.get(p.url + "/static/a.txt", timeout=5).status_code == 200
    assert requests.get(p.url + "/static/missing.txt", timeout=5).status_code == 404

    after = requests.get(murl, timeout=5).text
    assert metric(after, "porch_route_responses_total", route="app", **{"class": "2xx"}) - \
        metric(before, "porch_route_responses_total", route="app", **{"class": "2xx"}) == 5
    assert metric(after, "porch_route_responses_total", route="static", **{"class": "2xx"}) == 3
    assert metric(after, "porch_route_responses_total", route="static", **{"class": "4xx"}) == 1
    assert metric(after, "porch_response_seconds_count", route="app") >= 5
    assert metric(after, "porch_queue_wait_seconds_count") >= 5
    assert metric(after, "porch_workers_alive") == 1
    assert metric(after, "porch_requests_total") >= 9


def test_access_log_has_every_route(porch, tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.txt").write_text("hello")
    log = tmp_path / "access.log"
    p = porch("-w", "1", "--access-logfile", log, "--static", f"/static/={static}", "wsgiapp:application")
    assert requests.get(p.url + "/say?text=hi", timeout=5).status_code == 200
    assert requests.get(p.url + "/static/a.txt", timeout=5).status_code == 200
    assert requests.get(p.url + "/static/nope.txt", timeout=5).status_code == 404
    import time
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(log.read_text().splitlines()) < 3:
        time.sleep(0.05)
    lines = log.read_text().splitlines()
    assert any('"GET /say?text=hi HTTP/1.1" 200' in l for l in lines), lines
    assert any('"GET /static/a.txt HTTP/1.1" 200 5 ' in l for l in lines), lines
    assert any('"GET /static/nope.txt HTTP/1.1" 404' in l for l in lines), lines


def test_combined_log_escapes_what_a_client_sent(porch, tmp_path):
    """A quote in the User-Agent or a right-to-left override in the Referer cannot break
    the combined format's fields apart or hide text: they are written as \\xHH (nginx)."""
    import socket
    import time

    log = tmp_path / "access.log"
    p = porch("-w", "1", "--access-logfile", log, "wsgiapp:application")
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b'GET /say?text=q HTTP/1.1\r\nHost: t\r\nUser-Agent: evil" 200 1 "x\r\n'
                  b"Referer: http://a/\xe2\x80\xaegnp.exe\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not log.read_text().strip():
        time.sleep(0.05)
    line = log.read_text().strip()
    assert line.count('"') == 6, line  # request, referer, user agent: three quoted fields
    assert 'evil\\x22 200 1 \\x22x' in line, line
    assert "\\xE2\\x80\\xAEgnp.exe" in line, line


def test_porchs_own_rejections_get_an_access_log_line(porch, tmp_path):
    """A request the strict layer refuses (here bare LF: 400) is logged like any other."""
    import socket
    import time

    log = tmp_path / "access.log"
    p = porch("-w", "1", "--access-logfile", log, "wsgiapp:application")
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b"GET /say?text=x HTTP/1.1\nHost: t\n\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:100]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and " 400 " not in log.read_text():
        time.sleep(0.05)
    assert '"- - HTTP/1.1" 400 ' in log.read_text(), log.read_text()


def test_a_connection_refused_past_the_per_ip_limit_gets_an_access_log_line(porch, tmp_path):
    """429 before any request is read (limit_connections_per_ip) is logged like any other,
    and JSON lines say `aborted` only for responses that were cut."""
    import json
    import socket
    import time

    log = tmp_path / "access.log"
    p = porch("-w", "1", "--limit-connections-per-ip", "1", "--access-logfile", log,
              "--access-logformat", "json", "wsgiapp:application")
    time.sleep(0.5)  # the readiness probe's connection is gone
    holder = RawConn(p.port)
    try:
        holder.send(b"GET /say?text=ok HTTP/1.1\r\nHost: t\r\n\r\n")
        assert holder.read_response().status == 200  # admitted, and kept open
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 429 "), reply[:100]
    finally:
        holder.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(log.read_text().splitlines()) < 2:
        time.sleep(0.05)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    refused = [r for r in lines if r["status"] == 429]
    served = [r for r in lines if r["status"] == 200]
    assert len(refused) == 1 and len(served) == 1, lines
    assert served[0]["aborted"] is False, served
