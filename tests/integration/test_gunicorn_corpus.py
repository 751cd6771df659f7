"""Real Gunicorn command lines (gunicorn_corpus/command_lines.yaml) run with porch instead.

Each line runs as its project wrote it, with a stand-in app at the dotted path it names;
see the data file's header for the few things the test changes (ports, paths) so runs
never collide. A line expected to serve must start and answer; a line porch cannot run
must stop with a message that says what to change. At least 90 % must serve.
"""

from __future__ import annotations

import http.client
import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import PORCH_BIN, free_port, wait_until

CORPUS = Path(__file__).parent / "gunicorn_corpus"
LINES = yaml.safe_load((CORPUS / "command_lines.yaml").read_text())

# Gunicorn options that take no value (every other option takes one).
NO_VALUE = {
    "--preload", "--capture-output", "--reload", "--daemon", "-D", "--log-syslog", "-R",
    "--enable-stdio-inheritance", "--check-config", "--no-sendfile", "--reuse-port", "--spew",
    "--print-config", "--initgroups",
}
PATH_OPTIONS = {"--chdir", "--pythonpath", "--log-file", "--error-logfile", "--access-logfile",
                "--pid", "-p"}


def expand(text: str, env: dict) -> str:
    """`$VAR`, `${VAR}` and `${VAR:-default}`, as the shell expands them."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)",
                  lambda m: env.get(m.group(3), "") if m.group(3) else
                  (env.get(m.group(1)) or (m.group(2) or "")), text)


def program_args(words: list[str]) -> list[str]:
    """The arguments after the program word (`exec`, `python -m gunicorn`, a venv path)."""
    if words[0] == "exec":
        words = words[1:]
    if words[:3] == ["python", "-m", "gunicorn"]:
        return words[3:]
    assert words[0].endswith("gunicorn"), words
    return words[1:]


class Line:
    """One corpus line, prepared to run in `tmp`: its arguments, app and address."""

    def __init__(self, entry: dict, tmp: Path):
        self.cmd = entry["cmd"]
        self.port = free_port()
        self.env = {"PORT": str(self.port), **{k: str(v) for k, v in (entry.get("env") or {}).items()}}
        words = program_args(shlex.split(expand(entry["cmd"], self.env)))
        self.tmp = tmp
        self.unix: Path | None = None
        self.app: str | None = None
        self.chdir = tmp
        self.args: list[str] = []
        i = 0
        while i < len(words):
            w = words[i]
            i += 1
            if not w.startswith("-") or w == "-":
                self.app = self.app or w
                self.args.append(w)
                continue
            name, eq, value = w.partition("=")
            if not eq and name not in NO_VALUE and i < len(words):
                value = words[i]
                i += 1
                self.args += [name, self.rewrite(name, value)]
            elif eq:
                self.args.append(f"{name}={self.rewrite(name, value)}")
            else:
                self.args.append(w)

    def rewrite(self, name: str, value: str) -> str:
        if name in ("-b", "--bind"):
            if value.startswith("unix:"):
                self.unix = self.tmp / Path(value[5:]).name
                return f"unix:{self.unix}"
            host = value.rsplit(":", 1)[0] if ":" in value else value
            return f"{host}:{self.port}"
        if name in PATH_OPTIONS and value not in ("-", ""):
            p = Path(value)
            if p.is_absolute():
                p = self.tmp / (p.name or "root")
            if name == "--chdir":
                self.chdir = self.tmp / p
                self.chdir.mkdir(parents=True, exist_ok=True)
            elif name != "--pythonpath":
                (self.tmp / p).parent.mkdir(parents=True, exist_ok=True)
            else:
                (self.tmp / p).mkdir(parents=True, exist_ok=True)
            return str(p)
        return value

    def write_app(self) -> None:
        """A WSGI module at the dotted path the line names (a factory for `f()` forms)."""
        module, _, attr = self.app.partition(":")
        attr = attr or "application"
        factory = "(" in attr
        name = attr.split("(")[0]
        path = self.chdir.joinpath(*module.split("."))
        for parent in [path.parents[i] for i in range(len(module.split(".")) - 1)]:
            parent.mkdir(parents=True, exist_ok=True)
            (parent / "__init__.py").touch()
        if "uvicorn" in self.cmd:
            # `-k uvicorn.workers.UvicornWorker`: the project's app is ASGI.
            app = ("async def _app(scope, receive, send):\n"
                   "    assert scope['type'] == 'http'\n"
                   "    await send({'type': 'http.response.start', 'status': 200,\n"
                   "                'headers': [(b'content-type', b'text/plain')]})\n"
                   "    await send({'type': 'http.response.body', 'body': b'corpus ok'})\n")
        else:
            app = ("def _app(environ, start_response):\n"
                   "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                   "    return [b'corpus ok']\n")
        app += f"def {name}(*a, **k):\n    return _app\n" if factory else f"{name} = _app\n"
        path.with_suffix(".py").write_text(app)

    def get(self) -> tuple[int, bytes]:
        if self.unix:
            conn = _UnixConnection(str(self.unix))
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/")
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def listening(self) -> bool:
        try:
            if self.unix:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.unix))
            else:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def run(entry: dict, tmp: Path) -> tuple[Line, subprocess.Popen]:
    line = Line(entry, tmp)
    line.write_app()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(line.env)
    proc = subprocess.Popen(
        [str(PORCH_BIN), *line.args], cwd=line.tmp, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    return line, proc


@pytest.mark.parametrize("entry", LINES, ids=[e["source"] for e in LINES])
def test_real_command_line(entry, tmp_path):
    line, proc = run(entry, tmp_path)
    try:
        if entry.get("expect") == "refuse":
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 2, err
            assert entry["message"] in err, err
            return
        assert wait_until(lambda: line.listening() or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.communicate(timeout=5)[1]
        assert wait_until(lambda: _serves(line), 60), f"{line.args} does not answer"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.communicate()


def _serves(line: Line) -> bool:
    try:
        return line.get() == (200, b"corpus ok")
    except OSError:
        return False


def test_the_corpus_is_real_and_at_least_90_percent_serves():
    assert len(LINES) >= 40
    for e in LINES:
        repo, _, path = e["source"].partition(":")
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", repo) and path, e["source"]
    serving = [e for e in LINES if e.get("expect", "serve") == "serve"]
    assert len(serving) / len(LINES) >= 0.9, f"{len(serving)} of {len(LINES)}"
    assert len({e["cmd"] for e in LINES}) == len(LINES), "a line is listed twice"
