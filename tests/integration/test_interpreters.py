"""porch on every CPython of the machine, installed the way users install it.

For each interpreter (Debian's /usr/bin/python3 and the pyenv versions 3.9-3.13): a fresh
virtualenv, the one wheel ``scripts/test`` built (``PORCH_WHEEL``) installed with pip, and
porch run from that venv's ``bin/`` serving the WSGI test app: plain requests, streaming,
uploads, a hung request's stack dump, kill -9 recovery, an ASGI app and a WebSocket. The Django example runs where
Django 5.2 supports the interpreter (3.10+). An interpreter without porch's extension, or
too old for it, stops start-up with exit 2 and a message naming the fix.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import APPS, PORCH_BIN, ROOT, Porch, run_porch, wait_until

PYENV = Path.home() / ".pyenv" / "versions"
WHEEL = os.environ.get("PORCH_WHEEL")


def _pyenv(minor: str) -> Path | None:
    found = sorted(PYENV.glob(f"{minor}.*/bin/python3"))
    return found[-1] if found else None


INTERPRETERS = {"debian-3.11": Path("/usr/bin/python3")}
for _minor in ("3.9", "3.10", "3.11", "3.12", "3.13"):
    _py = _pyenv(_minor)
    if _py is not None:
        INTERPRETERS[f"pyenv-{_minor}"] = _py



def _version(python: Path) -> tuple[int, int]:
    out = subprocess.run([str(python), "-c", "import sys; print(*sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout
    major, minor = out.split()
    return int(major), int(minor)


def _make_venv(python: Path, where: Path, *packages: str) -> Path:
    if not WHEEL:
        pytest.skip("PORCH_WHEEL not set (scripts/test builds the wheel and sets it)")
    subprocess.run([str(python), "-m", "venv", str(where)], check=True, timeout=180)
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", WHEEL], check=True, timeout=300)
    if packages:
        subprocess.run([*pip, *packages], check=True, timeout=600)
    return where


@pytest.fixture(scope="module", params=sorted(INTERPRETERS), ids=sorted(INTERPRETERS))
def venv(request, tmp_path_factory):
    python = INTERPRETERS[request.param]
    extra = ()
    if _version(python) >= (3, 10):
        lines = (ROOT / "examples" / "django" / "requirements.txt").read_text().splitlines()
        # SQLite here: the PostgreSQL driver is the one package the example can do without.
        extra = tuple(x.strip() for x in lines if x.strip() and not x.startswith("#") and "psycopg" not in x)
    return _make_venv(python, tmp_path_factory.mktemp(request.param) / "env", *extra)


@pytest.fixture(scope="module")
def served(venv):
    """porch from the venv's bin/, two workers, a short timeout for the stack-dump check."""
    p = Porch(["-w", "2", "--timeout", "2", "wsgiapp:application"], bin=venv / "bin" / "porch")
    yield p
    p.__exit__(None, None, None)


def test_the_venvs_porch_links_no_python(venv):
    out = subprocess.run(["ldd", str(venv / "bin" / "porch")], capture_output=True, text=True).stdout
    assert "libc" in out, out
    assert "python" not in out.lower(), out


def test_workers_run_the_venvs_interpreter(served, venv):
    want = os.path.realpath(venv / "bin" / "python")

    def exes():
        return [os.path.realpath(os.readlink(f"/proc/{pid}/exe")) for pid in served.worker_pids()]

    # A child is porch itself between its fork and its exec: a busy machine can show it.
    assert wait_until(lambda: exes() == [want, want], 10), (exes(), want)
    for pid in served.worker_pids():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"porch.worker" in cmdline, cmdline


def test_requests_streaming_and_uploads(served):
    r = requests.get(served.url + "/say?text=hello", timeout=10)
    assert r.status_code == 200 and r.text == "hello"
    r = requests.get(served.url + "/stream?n=5", timeout=10, stream=True)
    assert r.status_code == 200
    chunks = [c for c in r.iter_content(None) if c]
    assert b"".join(chunks), chunks
    body = os.urandom(3 << 20)
    r = requests.post(served.url + "/sha256", data=body, timeout=30)
    assert r.status_code == 200
    assert hashlib.sha256(body).hexdigest() in r.text


def test_hung_request_is_504_with_its_python_stack(served):
    r = requests.get(served.url + "/sleep?s=60", timeout=30)
    assert r.status_code == 504
    assert wait_until(lambda: "hung_in_sleep_here" in served.log(), 10), served.log()[-3000:]


def test_kill_9_is_replaced(served):
    assert wait_until(lambda: len(served.worker_pids()) == 2, 10), served.worker_pids()
    before = set(served.worker_pids())
    os.kill(min(before), signal.SIGKILL)
    assert wait_until(lambda: len(set(served.worker_pids()) - before) == 1
                      and len(served.worker_pids()) == 2, 15), served.worker_pids()
    for _ in range(6):
        assert requests.get(served.url + "/say?text=x", timeout=10).status_code == 200


def test_an_asgi_app(venv):
    """The ASGI worker on this CPython (asyncio's loop: no uvloop in this venv): lifespan
    state, a request body, and a task past the timeout cancelled without losing the worker."""
    p = Porch(["-w", "1", "--timeout", "2", "asgi_app:app"], bin=venv / "bin" / "porch")
    try:
        s = requests.post(p.url + "/scope?x=1", data=b"hello", timeout=10).json()
        assert s["body_len"] == 5 and s["query_string"] == "x=1" and s["loop"] == "asyncio", s
        assert s["state"] == {"started_by": s["pid"]}, s
        assert requests.get(p.url + "/sleep?60", timeout=30).status_code == 504
        assert wait_until(lambda: "its task was cancelled" in p.log(), 10), p.log()[-3000:]
        assert requests.get(p.url + "/pid", timeout=10).json()["pid"] == s["pid"]
    finally:
        p.__exit__(None, None, None)


def test_a_websocket(venv):
    """WebSocket messages both ways and the app's close, on this CPython's event loop."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    p = Porch(["-w", "1", "ws_app:app"], bin=venv / "bin" / "porch")
    try:
        with connect(f"ws://127.0.0.1:{p.port}/echo") as c:
            c.send("héllo")
            assert c.recv(timeout=10) == "héllo"
            c.send(b"\x00\xff")
            assert c.recv(timeout=10) == b"\x00\xff"
        with connect(f"ws://127.0.0.1:{p.port}/app-closes") as c:
            assert c.recv(timeout=10) == "bye"
            with pytest.raises(ConnectionClosed) as e:
                c.recv(timeout=10)
            assert e.value.rcvd.code == 4001
    finally:
        p.__exit__(None, None, None)


def test_django_example(venv, tmp_path):
    if _version(venv / "bin" / "python") < (3, 10):
        pytest.skip("Django 5.2 needs Python 3.10 or later")
    example = ROOT / "examples" / "django"
    env = {"SECRET_KEY": "test", "DEBUG": "0", "ALLOWED_HOSTS": "127.0.0.1",
           "SQLITE_PATH": str(tmp_path / "db.sqlite3"), "DATABASE_URL": "",
           "PYTHONPATH": str(example)}
    full = {**os.environ, **env}
    full.pop("VIRTUAL_ENV", None)
    subprocess.run([str(venv / "bin" / "python"), "manage.py", "migrate", "--noinput", "-v", "0"],
                   cwd=example, env=full, check=True, timeout=120)
    p = Porch(["-w", "2", "bookstore.wsgi:application"], bin=venv / "bin" / "porch", cwd=example, env=env)
    try:
        r = requests.post(p.url + "/api/authors/", json={"name": "Ursula"}, timeout=10)
        assert r.status_code in (201, 401, 403), (r.status_code, r.text[:500])
        r = requests.get(p.url + "/api/authors/", timeout=10)
        assert r.status_code == 200, r.text[:500]
        assert r.headers["Content-Type"].startswith("application/json")
    finally:
        p.__exit__(None, None, None)


def test_interpreter_without_porch_is_refused_with_the_fix(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    r = run_porch(["--python", bare / "bin" / "python", "wsgiapp:application"])
    assert r.returncode == 2, r
    line = [x for x in r.stderr.splitlines() if "porch" in x][-1]
    assert str(bare / "bin" / "python") in line, line
    assert re.search(r"Python 3\.\d+\.\d+", line), line
    assert "-m pip install porch==" in line, line
    # --venv names the same interpreter.
    r = run_porch(["--venv", bare, "wsgiapp:application"])
    assert r.returncode == 2 and "-m pip install porch==" in r.stderr, r


def test_too_old_python_is_refused():
    old = _pyenv("3.8")
    if old is None:
        pytest.skip("no CPython 3.8 here")
    r = run_porch(["--python", old, "wsgiapp:application"])
    assert r.returncode == 2, r
    assert "CPython 3.9 or later" in r.stderr and "3.8" in r.stderr, r.stderr


def test_check_config_checks_the_interpreter_too(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    r = run_porch(["--python", bare / "bin" / "python", "--check-config", "wsgiapp:application"])
    assert r.returncode == 2 and "not installed" in r.stderr, r


def test_python_dash_m_porch_runs_the_front():
    python = PORCH_BIN.parent / "python"
    r = subprocess.run([str(python), "-m", "porch", "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "porch" in (r.stdout + r.stderr), r


@pytest.mark.parametrize("crate", ["porch-ipc", "porch-config", "porch-front", "porch"])
def test_no_front_side_crate_reaches_python(crate):
    """The process boundary is the crate boundary: only porch-worker may depend on PyO3."""
    out = subprocess.run(["cargo", "tree", "--offline", "-p", crate, "-e", "normal,build", "--prefix", "none"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    deps = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    assert crate in deps, deps  # the listing is real
    assert not {d for d in deps if d.startswith("pyo3") or d == "porch-worker"}, sorted(deps)


def test_worker_crate_is_the_one_that_uses_pyo3():
    out = subprocess.run(["cargo", "tree", "--offline", "-p", "porch-worker", "-e", "normal", "--prefix", "none"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "pyo3 " in out.stdout, out
