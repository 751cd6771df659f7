"""Shared fixtures: start the real porch binary on loopback and talk to it over sockets.

Every test gets real processes: the release binary (``PORCH_BIN``, built once by
``scripts/test``), real CPython workers, real sockets.
"""

from __future__ import annotations

import os
import signal
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps"
# porch as pip installs it: the executable in the venv's bin/, beside the interpreter that
# has the worker extension (scripts/test builds the wheel and installs it there).
PORCH_BIN = Path(os.environ.get("PORCH_BIN", ROOT / ".venv" / "bin" / "porch"))


def _port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range: a port the kernel hands out for port 0
    is also what it gives the next outgoing connection, so between choosing it and porch
    binding it, a client socket of some test could take it (EADDRINUSE)."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (max(1024, low - 12000), low)


_PORTS = _port_range()
_next_port = random.randrange(*_PORTS)


def free_port() -> int:
    """A TCP port that nothing uses right now on any address, taken in turn from a range
    no outgoing connection uses (so it is still free when porch binds it)."""
    global _next_port
    lo, hi = _PORTS
    for _ in range(hi - lo):
        port, _next_port = _next_port, lo + (_next_port + 1 - lo) % (hi - lo)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free TCP port in {lo}-{hi}")


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

    def __init__(self, args, *, cwd=None, env=None, bind=True, wait=True, timeout=30.0, bin=None,
                 wrap=()):
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
        cmd = [*wrap, str(bin or PORCH_BIN)]
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
            start_new_session=True,  # its own process group: nothing leaks past a test
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
        _kill_group(self.proc.pid)
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



# --- additions: module-scoped porch, raw HTTP/1.1 connections and responses, polling ----


@pytest.fixture(scope="module")
def porch_module():
    """Factory like ``porch``, but the processes live for the whole test module (for tests
    that only read from a shared server and never disturb its workers)."""
    started: list[Porch] = []

    def start(*args, **kw) -> Porch:
        p = Porch(list(args), **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.__exit__(None, None, None)


def admin_metric(admin: int, series: str) -> float:
    """A value from the admin listener's /metrics; `series` is the name with its labels,
    as the line starts (`porch_out_of_descriptors_total{action="closed_idle"}`)."""
    import requests

    text = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    raise AssertionError(f"{series} not in /metrics:\n{text}")


def rss_kib(pid: int) -> int:
    """A process's resident memory, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05):
    """Poll ``predicate()`` until it returns a truthy value (returned) or ``timeout``
    passes (returns the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class RawResponse:
    """One HTTP/1.x response as read off the wire by :class:`RawConn`.

    ``complete`` is False when the connection ended before the body its framing announced
    (Content-Length not reached, or chunked without the terminating chunk)."""

    def __init__(self, version, status, reason, headers, body, complete, framing):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-case name, value)
        self.body = body
        self.complete = complete
        self.framing = framing  # "length", "chunked", "close" or "none"

    def header(self, name: str):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def __repr__(self):
        return (f"<RawResponse {self.version} {self.status} {self.reason!r} framing={self.framing} "
                f"complete={self.complete} body={self.body[:80]!r}{'...' if len(self.body) > 80 else ''}>")


class ConnectionEnded(Exception):
    """The server closed the connection before a whole response head arrived."""


class RawConn:
    """A client connection that sends raw bytes and parses responses itself, so tests see
    exactly what the server put on the wire (framing, order, early close)."""

    def __init__(self, port: int | None = None, *, unix: str | None = None, timeout: float = 5.0):
        if unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False at EOF (or reset)."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from server in time")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError("no data from server in time") from None
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_exact(self, n: int, deadline: float) -> tuple[bytes, bool]:
        while len(self.buf) < n:
            if not self._fill(deadline):
                data, self.buf = self.buf, b""
                return data, False
        data, self.buf = self.buf[:n], self.buf[n:]
        return data, True

    def _read_line(self, deadline: float) -> bytes | None:
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_head(self, timeout: float | None = None):
        """(version, status, reason, headers) of the next response head."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionEnded(f"connection closed; received {self.buf[:200]!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        return version, int(status), (reason[0] if reason else ""), headers

    def read_response(self, *, head: bool = False, timeout: float | None = None,
                      skip_informational: bool = True) -> RawResponse:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            version, status, reason, headers = self.read_head(deadline - time.monotonic())
            if not (skip_informational and 100 <= status < 200):
                break
        h = {}
        for k, v in headers:
            h.setdefault(k, v)
        if head or 100 <= status < 200 or status in (204, 304):
            return RawResponse(version, status, reason, headers, b"", True, "none")
        if "chunked" in h.get("transfer-encoding", "").lower():
            body = b""
            while True:
                line = self._read_line(deadline)
                if line is None:
                    return RawResponse(version, status, reason, headers, body, False, "chunked")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers until an empty line
                    while True:
                        t = self._read_line(deadline)
                        if t is None:
                            return RawResponse(version, status, reason, headers, body, False, "chunked")
                        if t == b"":
                            return RawResponse(version, status, reason, headers, body, True, "chunked")
                data, ok = self._read_exact(size + 2, deadline)
                body += data[:size]
                if not ok:
                    return RawResponse(version, status, reason, headers, body, False, "chunked")
        if "content-length" in h:
            n = int(h["content-length"])
            body, ok = self._read_exact(n, deadline)
            return RawResponse(version, status, reason, headers, body, ok, "length")
        # delimited by close
        while self._fill(deadline):
            pass
        body, self.buf = self.buf, b""
        return RawResponse(version, status, reason, headers, body, True, "close")

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection within ``timeout`` (any bytes it sends
        meanwhile are kept in the buffer)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``data`` and read until the server closes the connection: (bytes received,
    whether the server closed it within ``timeout``)."""
    with RawConn(port, timeout=timeout) as c:
        c.send(data)
        closed = c.wait_closed(timeout)
        return c.buf, closed



def _kill_group(pgid: int) -> None:
    """SIGKILL whatever is left in a process group (workers that outlived their porch)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_porch(args, *, timeout: float = 20.0, env=None, cwd=None, bin=None) -> subprocess.CompletedProcess:
    """Run porch to completion (``--version``, ``--check-config``, startup failures) with
    the same environment the ``porch`` fixture uses; stdout and stderr as text. A porch
    still running after ``timeout`` fails the test (its process group is killed)."""
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    full_env.pop("VIRTUAL_ENV", None)
    full_env["PYTHONPATH"] = str(APPS)
    if env:
        full_env.update(env)
    cmd = [str(bin or PORCH_BIN), *[str(a) for a in args]]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd or APPS,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"porch still running after {timeout}s: {cmd}\nstdout: {out}\nstderr: {err}")
    _kill_group(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(APPS))  # tests share helpers (e.g. wsgiapp.pattern_bytes) with the apps
