"""Gunicorn's command line, environment and process options, as real deployments use them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

from conftest import APPS, PORCH_BIN, free_port, run_porch, wait_for_port, wait_until
from test_tls import make_cert


def get(url, **kw):
    return requests.get(url, timeout=kw.pop("timeout", 10), **kw)


def test_worker_classes_and_harmless_flags_start_and_say_what_differs(porch):
    p = porch(
        "-k", "gevent", "--worker-connections", "4", "--worker-tmp-dir", "/dev/shm",
        "--preload", "--capture-output", "-n", "web", "--statsd-host", "127.0.0.1:8125",
        "--log-syslog", "-w", "1", "wsgiapp:application",
    )
    assert get(p.url + "/say").status_code == 200
    log = p.log()
    assert "gevent" in log and "4 Python threads" in log, log
    for flag in ("--preload", "--worker-tmp-dir", "--statsd-host", "--log-syslog"):
        assert flag in log, f"no note for {flag}: {log}"


def test_sync_and_gthread_are_porch_workers(porch):
    p = porch("-k", "gthread", "--threads", "3", "-w", "1", "wsgiapp:application")
    assert get(p.url + "/say").status_code == 200
    assert "1 worker(s) x 3 thread(s)" in p.log()
    p = porch("--worker-class=sync", "-w", "1", "wsgiapp:application")
    assert get(p.url + "/say").status_code == 200


def test_every_refused_option_is_reported_in_one_message():
    r = run_porch(
        ["--paste", "x.ini", "--bogus", "-k", "aiohttp.GunicornWebWorker", "--dirty-app",
         "a:b", "--print-config", "wsgiapp:application"],
        timeout=10,
    )
    assert r.returncode == 2
    err = r.stderr
    for name in ("--paste", "--bogus", "aiohttp.GunicornWebWorker", "--dirty-app", "--print-config"):
        assert name in err, f"{name} missing: {err}"
    # One line each, each with what to do instead.
    assert len([l for l in err.splitlines() if l.startswith("  `") or l.startswith("  worker")]) == 5, err


def test_zero_means_no_limit_as_in_gunicorn(porch):
    p = porch(
        "--timeout", "0", "--keep-alive", "0", "--limit-request-line", "0",
        "--limit-request-field_size", "0", "--limit-request-fields", "0", "-w", "1",
        "wsgiapp:application",
    )
    r = get(p.url + "/say", headers={"X-Long": "a" * 20000})
    assert r.status_code == 200
    # No keep-alive: the connection closes after the response.
    assert r.headers.get("connection", "").lower() == "close", r.headers
    r = get(p.url + "/" + "x" * 9000)
    assert r.status_code != 414


def test_env_flag_sets_the_apps_environment_and_pid_file(porch, tmp_path):
    pidfile = tmp_path / "porch.pid"
    p = porch("-e", "PORCH_TEST_VALUE=from-flag", "--env", "OTHER=1", "--pid", pidfile,
              "-w", "1", "wsgiapp:application")
    r = get(p.url + "/osenv?key=PORCH_TEST_VALUE")
    assert r.status_code == 200
    assert "from-flag" in r.text, r.text
    assert pidfile.read_text().strip() == str(p.proc.pid)
    p.stop()
    assert not pidfile.exists()


def test_factory_with_literal_arguments(porch):
    p = porch("-w", "1", 'factory_app:configured("prod", greeting="hi")')
    r = get(p.url + "/say")
    assert r.status_code == 200, r.text
    assert "prod" in r.text and "hi" in r.text, r.text


def test_port_and_web_concurrency_are_defaults(porch):
    port = free_port()
    p = porch("wsgiapp:application", bind=False, env={"PORT": str(port), "WEB_CONCURRENCY": "2"})
    wait_for_port(port, p.proc)
    assert wait_until(lambda: f"listening on http://0.0.0.0:{port}" in p.log(), 10), p.log()
    assert wait_until(lambda: len(p.worker_pids()) == 2, 10), p.worker_pids()
    # A flag wins over WEB_CONCURRENCY.
    p = porch("-w", "1", "wsgiapp:application", env={"WEB_CONCURRENCY": "3"})
    time.sleep(0.5)
    assert len(p.worker_pids()) == 1


def test_gunicorn_cmd_args_under_the_command_line(porch):
    p = porch("-w", "1", "wsgiapp:application",
              env={"GUNICORN_CMD_ARGS": "--workers 3 --timeout 0 --access-logfile -"})
    assert get(p.url + "/say").status_code == 200
    time.sleep(0.5)
    assert len(p.worker_pids()) == 1
    assert wait_until(lambda: '"GET /say HTTP/1.1" 200' in p.stdout(), 5), p.stdout()


def test_certfile_and_keyfile_put_tls_on_the_binds(porch, tmp_path):
    cert, key = make_cert(tmp_path, "localhost", ["localhost"], "rsa")
    p = porch("--certfile", cert, "--keyfile", key, "-w", "1", "wsgiapp:application")
    r = subprocess.run(
        ["curl", "-sS", "--cacert", str(cert), "--resolve", f"localhost:{p.port}:127.0.0.1",
         f"https://localhost:{p.port}/say"],
        capture_output=True, text=True, timeout=20,
    )
    assert r.stdout == "hello", r.stderr
    r = run_porch(["--certfile", str(cert), "--check-config", "wsgiapp:application"], timeout=10)
    assert r.returncode == 2 and "keyfile" in r.stderr, r.stderr


def test_daemon_detaches_and_the_pid_file_finds_it(tmp_path):
    port = free_port()
    pidfile = tmp_path / "porch.pid"
    env = dict(os.environ, PYTHONPATH=str(APPS))
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(
        [str(PORCH_BIN), "--daemon", "-b", f"127.0.0.1:{port}", "-w", "1", "--pid", str(pidfile),
         "--error-logfile", str(tmp_path / "error.log"), "wsgiapp:application"],
        cwd=APPS, env=env, timeout=20, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    try:
        wait_for_port(port)
        assert get(f"http://127.0.0.1:{port}/say").status_code == 200
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
    assert wait_until(lambda: not pidfile.exists(), 20)


def test_systemd_socket_activation_uses_the_inherited_socket(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(APPS), LISTEN_FDS="1")
    env.pop("VIRTUAL_ENV", None)
    fd = sock.fileno()

    def as_fd_3():
        os.dup2(fd, 3)

    # LISTEN_PID must name porch itself: the shell exports its pid and execs porch.
    proc = subprocess.Popen(
        ["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', str(PORCH_BIN), "-w", "1",
         "-b", "127.0.0.1:1", "wsgiapp:application"],
        cwd=APPS, env=env, pass_fds=(3, fd), preexec_fn=as_fd_3,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    sock.close()
    try:
        assert wait_until(lambda: _answers(port), 30), "no answer on the inherited socket"
        # The sockets are porch's: workers do not see systemd's variables.
        r = get(f"http://127.0.0.1:{port}/osenv?key=LISTEN_FDS")
        assert r.text == "<unset>", r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "socket(s) passed by systemd" in err, err


def _answers(port: int) -> bool:
    try:
        return get(f"http://127.0.0.1:{port}/say", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_reload_replaces_the_workers_when_a_source_file_changes(porch, tmp_path):
    app = tmp_path / "reloadme.py"
    app.write_text(_VERSIONED_APP.format(version="one"))
    p = porch("--reload", "-w", "1", "reloadme:application", cwd=tmp_path,
              env={"PYTHONPATH": str(tmp_path)})
    assert get(p.url + "/").text == "one"
    assert wait_until(lambda: "--reload: watching" in p.log(), 10), p.log()
    app.write_text(_VERSIONED_APP.format(version="two"))
    assert wait_until(lambda: get(p.url + "/").text == "two", 20), p.log()


_VERSIONED_APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{version}"]
'''


# The combined format as Logstash's COMBINEDAPACHELOG and GoAccess read it.
COMBINED = re.compile(
    r'^(?P<h>\S+) - - \[(?P<t>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(?P<r>[^"]*)" (?P<s>\d{3}) (?P<b>\d+|-) "(?P<f>[^"]*)" "(?P<a>[^"]*)"'
)


def test_combined_log_time_is_the_common_log_format(porch, tmp_path):
    log = tmp_path / "access.log"
    p = porch("-w", "1", "--access-logfile", log, "wsgiapp:application")
    assert get(p.url + "/say?text=t").status_code == 200
    assert wait_until(lambda: log.exists() and log.read_text().strip(), 5)
    line = log.read_text().splitlines()[0]
    m = COMBINED.match(line)
    assert m, line
    assert time.strptime(m["t"], "%d/%b/%Y:%H:%M:%S %z")
    assert m["r"] == "GET /say?text=t HTTP/1.1" and m["s"] == "200", line


def test_gunicorn_access_log_template(porch, tmp_path):
    log = tmp_path / "access.log"
    fmt = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s %(L)s %(m)s %(U)s %(q)s %({X-Request-Id}i)s'
    p = porch("-w", "1", "--access-logfile", log, "--access-logformat", fmt, "wsgiapp:application")
    r = get(p.url + "/say?text=t", headers={"X-Request-Id": "abc123", "User-Agent": "probe/1"})
    assert r.status_code == 200
    assert wait_until(lambda: log.exists() and log.read_text().strip(), 5)
    line = log.read_text().splitlines()[0]
    assert COMBINED.match(line), line
    tail = line.split('"probe/1" ', 1)[1].split()
    assert int(tail[0]) >= 0 and float(tail[1]) >= 0, line
    assert tail[2:] == ["GET", "/say", "text=t", "abc123"], line


def test_an_asgi_app_forced_to_wsgi_is_refused_at_start_by_name():
    r = run_porch(["--check-config", "--interface", "wsgi", "factory_app:asgi"], timeout=30)
    assert r.returncode != 0
    assert "factory_app:asgi is an ASGI app" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "--interface asgi" in r.stdout + r.stderr
