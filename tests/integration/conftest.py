"""Shared fixtures: start the real porch binary on loopback and talk to it over sockets.

Every test gets real processes: the release binary (``PORCH_BIN``, built once by
``scripts/test``), real CPython workers, real sockets.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps"
PORCH_BIN = Path(os.environ.get("PORCH_BIN", ROOT / "target" / "release" / "porch"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


class Porch:
    """A running porch process.

    ``Porch(args, ...)`` starts ``porch --bind 127.0.0.1:<free port> *args``; ``url`` is its
    base URL; ``log()`` returns everything it wrote to stderr so far (the error log).
    """

    def __init__(self, args, *, cwd=None, env=None, bind=True, wait=True, timeout=30.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stderr = tempfile.NamedTemporaryFile(prefix="porch-stderr-", delete=False)
        self._stdout = tempfile.NamedTemporaryFile(prefix="porch-stdout-", delete=False)
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        full_env.pop("VIRTUAL_ENV", None)
        full_env["PYTHONPATH"] = str(APPS)
        if env:
            full_env.update(env)
        cmd = [str(PORCH_BIN)]
        if bind:
            cmd += ["--bind", f"127.0.0.1:{self.port}"]
        cmd += [str(a) for a in args]
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd or APPS,
            env=full_env,
            stdout=self._stdout,
            stderr=self._stderr,
        )
        if wait and bind:
            try:
                wait_for_port(self.port, self.proc, timeout)
            except Exception:
                self.stop()
                raise RuntimeError(f"porch failed to start: {cmd}\n{self.log()}")

    def log(self) -> str:
        return Path(self._stderr.name).read_text(errors="replace")

    def stdout(self) -> str:
        return Path(self._stdout.name).read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def worker_pids(self) -> list[int]:
        """PIDs of this porch's worker processes (its direct children)."""
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        for f in (self._stderr, self._stdout):
            f.close()
            try:
                os.unlink(f.name)
            except OSError:
                pass


@pytest.fixture
def porch():
    """Factory: ``porch(args...)`` starts porch and stops it at the end of the test."""
    started: list[Porch] = []

    def start(*args, **kw) -> Porch:
        p = Porch(list(args), **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.__exit__(None, None, None)


def raw_request(port: int, data: bytes, *, timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send raw bytes to 127.0.0.1:port and return what came back until the server closed
    the connection (or the timeout passed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
        return b"".join(chunks)


sys.path.insert(0, str(Path(__file__).parent))
