"""Real gunicorn.conf.py files (gunicorn_corpus/configs.yaml) loaded by porch: their
settings take effect and their hooks run. Also the rules around Python configuration
files: flags win, unknown names are ignored, refusals and errors name the file."""

from __future__ import annotations

import glob
import multiprocessing
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import PORCH_BIN, free_port, run_porch, wait_for_port, wait_until

CORPUS = Path(__file__).parent / "gunicorn_corpus"
CONFIGS = yaml.safe_load((CORPUS / "configs.yaml").read_text())

APP = """
def _app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"config ok"]
"""

# prometheus_client's multiprocess.mark_process_dead, as the child_exit hooks call it: it
# leaves a marker so the test sees the hook ran with the worker's pid.
PROMETHEUS_STUB = """
import os

def mark_process_dead(pid, path=None):
    open(f"dead.{pid}", "w").close()
"""


def write_app(root: Path, spec: str) -> None:
    module, _, attr = spec.partition(":")
    attr = (attr or "application").split("(")[0]
    parts = module.split(".")
    for i in range(1, len(parts)):
        pkg = root.joinpath(*parts[:i])
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").touch()
    root.joinpath(*parts).with_suffix(".py").write_text(APP + f"{attr} = _app\n")


def prepare(entry: dict, tmp: Path) -> tuple[list[str], dict, int]:
    text = (CORPUS / "configs" / entry["file"]).read_text()
    (tmp / entry["as"]).write_text(text)
    wsgi_app = re.search(r"^wsgi_app\s*=\s*['\"]([^'\"]+)", text, re.M)
    write_app(tmp, entry.get("app") or wsgi_app.group(1))
    for stub in entry.get("stubs", []):
        (tmp / stub).mkdir()
        (tmp / stub / "__init__.py").touch()
        (tmp / stub / "multiprocess.py").write_text(PROMETHEUS_STUB)
    for d in entry.get("dirs", []):
        (tmp / d).mkdir()
    port = free_port()
    how = entry.get("how", "-c")
    args = [] if how == "default" else ["-c", how if how.startswith("python:") else entry["as"]]
    if not entry.get("port_from_env"):
        args += ["-b", f"127.0.0.1:{port}"]
    if entry.get("app"):
        args.append(entry["app"])
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PORT"] = str(port)
    return args, env, port


def expected_workers(entry: dict) -> int:
    return eval(entry["workers"], {"cpus": multiprocessing.cpu_count()})


@pytest.mark.parametrize("entry", CONFIGS, ids=[e["source"] for e in CONFIGS])
def test_real_gunicorn_config_file(entry, tmp_path):
    for m in entry.get("markers", []):
        Path(m).unlink(missing_ok=True)
    args, env, port = prepare(entry, tmp_path)
    out, err = tmp_path / "porch.out", tmp_path / "porch.err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen([str(PORCH_BIN), *args], cwd=tmp_path, env=env, stdout=o,
                                stderr=e, start_new_session=True)
    log_file = tmp_path / entry.get("error_log", "porch.err")
    pid = proc.pid
    try:
        if entry.get("daemon"):
            assert proc.wait(30) == 0, err.read_text()
            pidfile = tmp_path / "logs" / "gunicorn.pid"
            assert wait_until(pidfile.exists, 30), log_file.read_text()
            pid = int(pidfile.read_text())
        wait_for_port(port, None if entry.get("daemon") else proc, 60)
        r = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert (r.status_code, r.text) == (200, "config ok")
        serving = f"with {expected_workers(entry)} worker(s) x {entry['threads']} thread(s)"
        assert wait_until(lambda: serving in log_file.read_text(), 30), log_file.read_text()
        for line in entry.get("log", []):
            assert wait_until(lambda: line in log_file.read_text(), 10), (line, log_file.read_text())
        for line in entry.get("stdout", []):
            assert wait_until(lambda: line in out.read_text(), 10), (line, out.read_text())
        if entry.get("access_stdout"):
            assert wait_until(lambda: '"GET / HTTP/1.1" 200' in out.read_text(), 10), out.read_text()
        for m in entry.get("markers", []):
            assert wait_until(lambda: Path(m).exists(), 10), m
    finally:
        os.kill(pid, signal.SIGTERM)
        if not entry.get("daemon"):
            proc.wait(60)
    assert wait_until(lambda: not _alive(pid), 60)
    for pattern in entry.get("after_stop", []):
        assert glob.glob(str(tmp_path / pattern)), f"no {pattern}: {log_file.read_text()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_the_config_corpus_is_real():
    assert len(CONFIGS) >= 10
    for e in CONFIGS:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+:\S+", e["source"]), e["source"]
        assert (CORPUS / "configs" / e["file"]).is_file()


# --- the rules ------------------------------------------------------------------------


def test_flags_win_over_the_file_and_unknown_names_are_ignored(porch, tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text(
        "workers = 3\nthreads = 2\nraw_env = ['FROM_FILE=yes']\nnot_a_setting = {'x': 1}\n"
        "import os\nbind = 'unix:/nonexistent/dir/s.sock'\n"
    )
    write_app(tmp_path, "app:application")
    p = porch("-w", "1", "app:application", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert wait_until(lambda: "with 1 worker(s) x 2 thread(s)" in p.log(), 20), p.log()


def test_worker_hooks_see_requests_and_exits(porch, tmp_path):
    (tmp_path / "hooks.py").write_text(
        "def pre_request(worker, req):\n"
        "    open(f'pre.{worker.pid}', 'a').write(req.method + ' ' + req.path + '\\n')\n"
        "def post_request(worker, req, environ, resp):\n"
        "    open(f'post.{worker.pid}', 'a').write(f'{req.path} {resp.status_code}\\n')\n"
        "def worker_int(worker):\n"
        "    open(f'int.{worker.pid}', 'w').close()\n"
        "def worker_exit(server, worker):\n"
        "    open(f'exit.{worker.pid}', 'w').write(str(server.pid))\n"
        "def on_exit(server):\n"
        "    open('on_exit', 'w').close()\n"
    )
    write_app(tmp_path, "app:application")
    p = porch("-c", "hooks.py", "-w", "1", "app:application", cwd=tmp_path,
              env={"PYTHONPATH": str(tmp_path)})
    assert requests.get(p.url + "/x?y=1", timeout=10).text == "config ok"
    [worker] = p.worker_pids()
    assert wait_until(lambda: (tmp_path / f"post.{worker}").exists(), 10)
    assert (tmp_path / f"pre.{worker}").read_text() == "GET /x\n"
    assert (tmp_path / f"post.{worker}").read_text() == "/x 200\n"
    # TERM to the whole group, as systemd and Ctrl-C send it: the worker gets it too.
    os.killpg(p.proc.pid, signal.SIGTERM)
    p.wait(30)
    assert (tmp_path / f"int.{worker}").exists()
    assert (tmp_path / f"exit.{worker}").read_text() == str(p.proc.pid)
    assert (tmp_path / "on_exit").exists()


def test_a_file_without_py_is_read_as_python_when_it_is_not_toml(porch, tmp_path):
    (tmp_path / "gunicorn.conf").write_text("workers = 2\nthreads = 3\n")
    write_app(tmp_path, "app:application")
    p = porch("-c", "gunicorn.conf", "app:application", cwd=tmp_path,
              env={"PYTHONPATH": str(tmp_path)})
    assert wait_until(lambda: "with 2 worker(s) x 3 thread(s)" in p.log(), 20), p.log()


def test_refused_settings_and_failing_files_name_the_file(tmp_path):
    (tmp_path / "bad.py").write_text("paste = 'development.ini'\nworkers = 2\n")
    r = run_porch(["-c", str(tmp_path / "bad.py"), "--check-config", "app:application"],
                  cwd=tmp_path, timeout=30)
    assert r.returncode == 2 and "bad.py" in r.stderr and "paste" in r.stderr, r.stderr
    (tmp_path / "broken.py").write_text("workers = undefined_name\n")
    r = run_porch(["-c", str(tmp_path / "broken.py"), "--check-config", "app:application"],
                  cwd=tmp_path, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "broken.py" in r.stderr and "undefined_name" in r.stderr, r.stderr


def test_check_config_reads_the_file_and_runs_no_hook(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text(
        "workers = 'many'\n" "def post_fork(server, worker):\n    open('post_fork', 'w').close()\n"
    )
    write_app(tmp_path, "app:application")
    r = run_porch(["--check-config", "app:application"], cwd=tmp_path, timeout=30,
                  env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 2 and "`workers`" in r.stderr, r.stderr
    (tmp_path / "gunicorn.conf.py").write_text(
        "workers = 2\n" "def post_fork(server, worker):\n    open('post_fork', 'w').close()\n"
        "def pre_fork(server, worker):\n    open('pre_fork', 'w').close()\n"
    )
    r = run_porch(["--check-config", "app:application"], cwd=tmp_path, timeout=30,
                  env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "post_fork").exists() and not (tmp_path / "pre_fork").exists()
