"""The command line: Gunicorn-style invocation, app loading, paths, virtualenvs, binds, logs."""

from __future__ import annotations

import json
import os
import re
import socket
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import PORCH_BIN, RawConn, free_port, run_porch, wait_for_port, wait_until


def get(p, path, **kw):
    return requests.get(p.url + path, timeout=kw.pop("timeout", 10), **kw)


def assert_not_listening(port: int) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


# --- version, config check, unsupported flags -------------------------------------------


def test_version():
    r = run_porch(["--version"], timeout=10)
    assert r.returncode == 0, r.stderr
    assert re.search(r"\bporch\b.*\d+\.\d+\.\d+", r.stdout + r.stderr), r.stdout + r.stderr


def test_check_config_accepts_a_valid_setup_and_serves_nothing():
    port = free_port()
    r = run_porch(
        ["--check-config", "-b", f"127.0.0.1:{port}", "-w", "2", "wsgiapp:application"],
        timeout=20,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert_not_listening(port)


def test_check_config_rejects_a_bad_value_and_names_it():
    r = run_porch(["--check-config", "--workers", "lots", "wsgiapp:application"], timeout=10)
    assert r.returncode != 0
    err = r.stdout + r.stderr
    assert "workers" in err and "lots" in err, err


def test_check_config_reports_an_app_that_fails_to_import():
    r = run_porch(["--check-config", "failing_import:application"], timeout=20)
    assert r.returncode != 0
    assert "failing_import refuses to be imported" in r.stdout + r.stderr


def test_missing_config_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope" / "porch.toml"
    r = run_porch(["-c", missing, "wsgiapp:application"], timeout=10)
    assert r.returncode != 0
    assert str(missing) in r.stdout + r.stderr


def test_config_file(porch, tmp_path):
    cfg = tmp_path / "porch.toml"
    cfg.write_text('app = "wsgiapp:application"\nworkers = 3\nthreads = 2\n')
    p = porch("-c", cfg)
    assert wait_until(lambda: len(p.worker_pids()) == 3, 5), p.worker_pids()
    env = get(p, "/env").json()
    assert env["wsgi.multithread"] == "True"


def test_command_line_overrides_the_config_file(porch, tmp_path):
    cfg = tmp_path / "porch.toml"
    cfg.write_text('app = "wsgiapp:application"\nworkers = 3\n')
    p = porch("-c", cfg, "-w", "1")
    assert get(p, "/pid").status_code == 200
    time.sleep(0.5)
    assert len(p.worker_pids()) == 1


@pytest.mark.parametrize(
    "text, must_name",
    [('workers = "lots"\n', ["workers", "lots"]), ("wokers = 2\n", ["wokers"])],
    ids=["bad-value", "unknown-key"],
)
def test_bad_config_file_names_the_key(tmp_path, text, must_name):
    cfg = tmp_path / "porch.toml"
    cfg.write_text('app = "wsgiapp:application"\n' + text)
    r = run_porch(["--check-config", "-c", cfg], timeout=10)
    assert r.returncode != 0
    err = r.stdout + r.stderr
    assert all(n in err for n in must_name), err


@pytest.mark.parametrize(
    "flag, names",
    [
        (["--paste", "development.ini"], ["--paste", "WSGI callable"]),
        (["-k", "aiohttp.GunicornWebWorker"], ["aiohttp.GunicornWebWorker", "--interface asgi"]),
        (["--worker-class", "tornado"], ["tornado"]),
        (["--proxy-protocol"], ["--proxy-protocol", "X-Forwarded-For"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
    ids=["paste", "k-aiohttp", "worker-class-tornado", "proxy-protocol", "unknown"],
)
def test_unsupported_gunicorn_flag_is_an_error_naming_it(flag, names):
    port = free_port()
    started = time.monotonic()
    r = run_porch(["-b", f"127.0.0.1:{port}", *flag, "wsgiapp:application"], timeout=10)
    assert r.returncode != 0, f"{flag} was accepted: {r.stdout + r.stderr}"
    err = r.stdout + r.stderr
    assert all(n in err for n in names), f"error does not name {flag}: {err!r}"
    assert time.monotonic() - started < 10
    assert_not_listening(port)


def test_porch_cmd_args_environment_variable(porch):
    p = porch("wsgiapp:application", env={"PORCH_CMD_ARGS": "--workers 3 --max-requests 1000"})
    assert wait_until(lambda: len(p.worker_pids()) == 3, 5), p.worker_pids()
    assert get(p, "/pid").status_code == 200


def test_command_line_overrides_porch_cmd_args(porch):
    p = porch("-w", "1", "wsgiapp:application", env={"PORCH_CMD_ARGS": "-w 3"})
    assert get(p, "/pid").status_code == 200
    time.sleep(0.5)
    assert len(p.worker_pids()) == 1


def test_default_worker_count_is_the_number_of_cores(porch):
    p = porch("wsgiapp:application")
    cores = {os.cpu_count(), len(os.sched_getaffinity(0))}
    assert wait_until(lambda: len(p.worker_pids()) in cores, 5), (p.worker_pids(), cores)


# --- finding the app ----------------------------------------------------------------------


def test_module_alone_means_application(porch):
    p = porch("-w", "1", "wsgiapp")
    r = get(p, "/say?text=module-alone")
    assert r.status_code == 200 and r.text == "module-alone"


def test_named_callable(porch):
    p = porch("-w", "1", "wsgiapp:raw")
    r = get(p, "/say?text=raw-callable")
    assert r.status_code == 200 and r.text == "raw-callable"


def test_factory_call(porch):
    p = porch("-w", "1", "factory_app:create_app()")
    r = get(p, "/")
    assert r.status_code == 200
    assert r.text.startswith("made by create_app (called 1 time(s)"), r.text


def test_module_without_application_attribute_fails_startup(porch):
    p = porch("-w", "1", "factory_app", wait=False)
    rc = p.wait(15)
    assert rc != 0
    assert "application" in p.log()


def test_missing_module_fails_startup_naming_it(porch):
    p = porch("-w", "1", "no_such_module_xyz:application", wait=False)
    rc = p.wait(15)
    assert rc != 0
    assert "no_such_module_xyz" in p.log()


def test_app_that_fails_to_import_stops_startup_with_traceback(porch):
    started = time.monotonic()
    p = porch("-w", "2", "failing_import:application", wait=False)
    rc = p.wait(15)
    elapsed = time.monotonic() - started
    log = p.log()
    assert rc != 0
    assert elapsed < 15
    assert "Traceback" in log, log
    assert "refuse_to_import" in log, log  # the frame that raised
    assert "RuntimeError: failing_import refuses to be imported" in log, log
    # no respawn loop: the traceback shows up at most once per worker (or twice)
    assert log.count("failing_import refuses to be imported") <= 4, log
    assert_not_listening(p.port)


def test_requests_during_startup_wait_for_the_app(porch):
    """slow_import sleeps 1.5 s at import: a request sent the moment porch's port takes
    connections is answered by the app once it is imported, never with an error."""
    p = porch("-w", "2", "slow_import:application", wait=False)
    wait_for_port(p.port, p.proc, timeout=20)
    r = get(p, "/", timeout=15)
    assert r.status_code == 200 and r.text == "imported slowly"
    assert len(p.worker_pids()) == 2


def test_chdir(porch, tmp_path):
    app_dir = tmp_path / "site"
    app_dir.mkdir()
    (app_dir / "chdir_app.py").write_text(
        "import os\n"
        "def application(environ, start_response):\n"
        "    body = os.getcwd().encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [body]\n"
    )
    p = porch("-w", "1", "--chdir", app_dir, "chdir_app:application")
    r = get(p, "/")
    assert r.status_code == 200
    assert os.path.realpath(r.text) == os.path.realpath(app_dir)


def test_pythonpath_with_several_dirs(porch, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "pp_helper.py").write_text("WORD = 'from-dir-a'\n")
    (b / "pp_app.py").write_text(
        "import pp_helper\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [pp_helper.WORD.encode()]\n"
    )
    p = porch("-w", "1", "--pythonpath", f"{a},{b}", "pp_app:application")
    r = get(p, "/")
    assert r.status_code == 200 and r.text == "from-dir-a"


@pytest.fixture(scope="module")
def venv_dir(tmp_path_factory):
    """A virtualenv made as users make them, with a package in its site-packages and a
    second one reachable only through a .pth file (as editable installs are)."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "env"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()
    )
    # porch installed into it, as `pip install porch` leaves it: the package with its
    # extension (the venv's python runs the workers).
    import porch as installed

    shutil.copytree(Path(installed.__file__).parent, site / "porch")
    (site / "localpkg").mkdir()
    (site / "localpkg" / "__init__.py").write_text("GREETING = 'hello from the venv'\n")
    extra = root / "editable-src"
    extra.mkdir()
    (extra / "pthpkg.py").write_text("VALUE = 'found through a .pth file'\n")
    (site / "porch_test_extra.pth").write_text(str(extra) + "\n")
    return venv


def _check_venv_app(p, venv):
    r = get(p, "/")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["localpkg"] == "hello from the venv"
    assert os.path.realpath(data["localpkg_file"]).startswith(os.path.realpath(venv))
    assert data["pthpkg"] == "found through a .pth file"


def test_venv_flag(porch, venv_dir):
    p = porch("-w", "1", "--venv", venv_dir, "venv_app:application")
    _check_venv_app(p, venv_dir)


def test_virtual_env_variable(porch, venv_dir):
    p = porch("-w", "1", "venv_app:application", env={"VIRTUAL_ENV": str(venv_dir)})
    _check_venv_app(p, venv_dir)


def test_without_the_venv_the_app_cannot_import(porch, venv_dir):
    p = porch("-w", "1", "venv_app:application", wait=False)
    assert p.wait(15) != 0
    assert "localpkg" in p.log()


# --- listeners -------------------------------------------------------------------------------


def _free_port_v6() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


def test_bind_repeatable_ipv4_ipv6_unix(porch, tmp_path):
    port2 = free_port()
    port6 = _free_port_v6()
    sock_path = tmp_path / "porch.sock"
    p = porch(
        "-w", "1",
        "-b", f"127.0.0.1:{port2}",
        "-b", f"[::]:{port6}",
        "-b", f"unix:{sock_path}",
        "wsgiapp:application",
    )
    assert get(p, "/say?text=first").text == "first"
    r = requests.get(f"http://127.0.0.1:{port2}/say?text=second", timeout=10)
    assert r.status_code == 200 and r.text == "second"
    r = requests.get(f"http://[::1]:{port6}/say?text=v6", timeout=10)
    assert r.status_code == 200 and r.text == "v6"
    assert wait_until(sock_path.exists, 5)
    with RawConn(unix=str(sock_path)) as c:
        c.send(b"GET /say?text=unix HTTP/1.1\r\nHost: localhost\r\n\r\n")
        resp = c.read_response()
    assert resp.status == 200 and resp.body == b"unix"


# --- logs --------------------------------------------------------------------------------------


def test_access_log_to_stdout(porch):
    p = porch("-w", "1", "--access-logfile", "-", "wsgiapp:application")
    assert get(p, "/say?text=access-probe-1").status_code == 200
    assert get(p, "/status?code=404").status_code == 404
    assert wait_until(lambda: "access-probe-1" in p.stdout() and "/status" in p.stdout(), 5), p.stdout()
    lines = p.stdout().splitlines()
    probe = [line for line in lines if "access-probe-1" in line]
    assert probe and "GET" in probe[0] and "200" in probe[0], lines
    miss = [line for line in lines if "/status" in line]
    assert miss and "404" in miss[0], lines


def test_access_and_error_log_files(porch, tmp_path):
    access = tmp_path / "access.log"
    errors = tmp_path / "error.log"
    p = porch(
        "-w", "1", "--access-logfile", access, "--error-logfile", errors, "wsgiapp:application"
    )
    assert get(p, "/say?text=file-access-probe").status_code == 200
    assert get(p, "/stderr?msg=errors-file-probe-4711").status_code == 200
    assert wait_until(lambda: access.exists() and "file-access-probe" in access.read_text(), 5)
    assert wait_until(lambda: errors.exists() and "errors-file-probe-4711" in errors.read_text(), 5)


def test_log_level_is_validated(porch):
    p = porch("-w", "1", "--log-level", "debug", "wsgiapp:application")
    assert get(p, "/pid").status_code == 200
    r = run_porch(["--log-level", "chatty", "wsgiapp:application"], timeout=10)
    assert r.returncode != 0
    assert "chatty" in r.stdout + r.stderr


# --- request limits from the command line ------------------------------------------------------


def test_limit_request_line(porch):
    p = porch("-w", "1", "--limit-request-line", "200", "wsgiapp:application")
    ok = get(p, "/say?text=" + "a" * 100)
    assert ok.status_code == 200
    too_long = get(p, "/say?text=" + "a" * 400)
    assert too_long.status_code == 414


def test_limit_request_fields(porch):
    p = porch("-w", "1", "--limit-request-fields", "10", "wsgiapp:application")
    assert get(p, "/pid", headers={f"X-H{i}": "v" for i in range(3)}).status_code == 200
    r = get(p, "/pid", headers={f"X-H{i}": "v" for i in range(30)})
    assert r.status_code == 431


def test_limit_request_field_size(porch):
    p = porch("-w", "1", "--limit-request-field_size", "200", "wsgiapp:application")
    assert get(p, "/pid", headers={"X-Small": "v" * 50}).status_code == 200
    r = get(p, "/pid", headers={"X-Big": "v" * 1000})
    assert r.status_code == 431


@pytest.mark.parametrize("server", ["[x]:80", "[::1]", "web:0", "http://web:80", ":80"])
def test_check_config_and_startup_agree_on_upstream_addresses(tmp_path, server):
    """One grammar for upstream addresses: what --check-config refuses, start-up refuses
    the same way (exit 2, the key and the value named), never later with exit 1."""
    cfg = tmp_path / "porch.toml"
    cfg.write_text(f'[[listener]]\nbind = "127.0.0.1:{free_port()}"\n[[listener.route]]\npath = "/"\n'
                   f'proxy = "web"\n[upstream.web]\nservers = ["{server}"]\n')
    checked = run_porch(["-c", cfg, "--check-config"])
    started = run_porch(["-c", cfg])
    for r in (checked, started):
        assert r.returncode == 2, r
        assert "upstream.web.servers" in r.stderr and server in r.stderr, r.stderr
    assert checked.stderr == started.stderr


def test_the_open_files_limit_is_raised_to_the_hard_limit_and_logged(porch):
    """Under systemd's default soft limit of 1,024 descriptors, porch raises its own to the
    hard limit at start (workers inherit it) and says so."""
    p = porch("-w", "1", "wsgiapp:application", wrap=["prlimit", "--nofile=1024:4096", "--"])
    limits = open(f"/proc/{p.proc.pid}/limits").read()
    line = [x for x in limits.splitlines() if x.startswith("Max open files")][0]
    assert line.split()[3:5] == ["4096", "4096"], line
    assert "open files limit: 4096 (raised from 1024)" in p.log(), p.log()
