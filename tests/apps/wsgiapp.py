"""A routing WSGI app that exercises every part of PEP 3333.

``application`` is the app wrapped in ``wsgiref.validate.validator`` (every request it serves
is checked for spec compliance on both sides); ``raw`` is the same app unwrapped, for the
paths the validator hides from the server (``wsgi.file_wrapper`` detection).

Any request whose query string has ``marker=PATH`` appends a line to PATH as soon as the
app is called, so a test can prove that a request did (or never did) reach the app.

Endpoints (routing on PATH_INFO):

  /env            the environ as JSON (non-str values repr'd); the body is read
                  (CONTENT_LENGTH bytes) and returned as ``_body`` (latin-1)
  /say?text=T     T, with Content-Length
  /echo?mode=M    the request body, read with read() | readn | read1 | readline |
                  readline-n | readlines | iter
  /sha256         hex sha256 and length of the body, read in 64 KiB chunks
  /write          uses the write() callable, then returns an iterable
  /stream?n=&size=  a generator (no Content-Length, so chunked for HTTP/1.1)
  /big?size=N     N bytes of a fixed pattern, with Content-Length, from a generator
  /file?size=N&kind=real|bytesio&readlog=PATH&closelog=PATH
                  wsgi.file_wrapper over a temporary file (or a BytesIO)
  /error?msg=M    raises RuntimeError(M)
  /error-mid-body?cl=N  yields one chunk, then raises
  /bad-length[?more=1]  declares Content-Length 100, yields 10 (or 200) bytes
  /sleep?s=N      time.sleep(N) (in hung_in_sleep_here)
  /spin?s=N       a pure-Python busy loop holding the GIL (in spin_forever_here)
  /close?file=PATH[&fail=1][&chunks=N&delay=S]
                  returns an iterable whose close() increments a counter in PATH
  /exc-info?mode=before|after|twice&file=PATH
                  start_response called a second time (with exc_info, or without)
  /pid[?sleep=S]  {"pid": os.getpid(), "thread": threading.get_ident()}
  /crash?how=exit|kill  os._exit(1) or SIGKILL to its own process
  /stderr?msg=M   writes M to wsgi.errors
  /cookie         sets two cookies (two Set-Cookie header lines)
  /status?code=C  responds with status C
  /barrier?name=&n=&timeout=  waits until n requests are inside at once (threads)
  /no-start-response  returns without calling start_response
  /osenv?key=K    os.environ[K] in the worker, or <unset>
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern_bytes(size: int) -> bytes:
    """The first ``size`` bytes of the repeating pattern /big and /file serve."""
    reps, rest = divmod(size, len(PATTERN))
    return PATTERN * reps + PATTERN[:rest]


def _query(environ) -> dict[str, str]:
    q = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {k: v[-1] for k, v in q.items()}


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _bump(path: str) -> None:
    """Increment the integer counter stored in ``path``."""
    try:
        with open(path) as f:
            n = int(f.read().strip() or 0)
    except FileNotFoundError:
        n = 0
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        f.write(str(n + 1))
    os.replace(tmp, path)


def _respond(start_response, body: bytes, status="200 OK", ctype="text/plain", extra=()):
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
    headers.extend(extra)
    start_response(status, headers)
    return [body]


def _json(start_response, obj, status="200 OK"):
    return _respond(start_response, json.dumps(obj).encode(), status, "application/json")


def _unwrapped_input(environ):
    """The server's wsgi.input (the validator's wrapper forbids read() without a size)."""
    inp = environ["wsgi.input"]
    return getattr(inp, "input", inp)


# --- endpoints ------------------------------------------------------------------------


def env_view(environ, start_response):
    out = {}
    for k, v in environ.items():
        out[k] = v if isinstance(v, str) else repr(v)
    out["_types"] = {k: type(v).__name__ for k, v in environ.items()}
    cl = environ.get("CONTENT_LENGTH")
    body = environ["wsgi.input"].read(int(cl)) if cl else b""
    out["_body"] = body.decode("latin-1")
    out["_pid"] = os.getpid()
    return _json(start_response, out)


def say(environ, start_response):
    return _respond(start_response, _query(environ).get("text", "hello").encode("utf-8"))


def echo(environ, start_response):
    mode = _query(environ).get("mode", "read")
    inp = environ["wsgi.input"]
    if mode == "read":
        body = _unwrapped_input(environ).read()
    elif mode == "read-none":
        body = _unwrapped_input(environ).read(None)
    elif mode == "readn":
        parts = []
        while True:
            chunk = inp.read(8192)
            if not chunk:
                break
            parts.append(chunk)
        body = b"".join(parts)
    elif mode == "read1":
        parts = []
        while True:
            chunk = inp.read(1)
            if not chunk:
                break
            assert len(chunk) == 1
            parts.append(chunk)
        body = b"".join(parts)
    elif mode == "readline":
        parts = []
        while True:
            line = inp.readline()
            if not line:
                break
            assert line.endswith(b"\n") or b"\n" not in line
            assert line.count(b"\n") <= 1
            parts.append(line)
        body = b"".join(parts)
    elif mode == "readline-n":
        parts = []
        while True:
            line = inp.readline(3)
            if not line:
                break
            assert len(line) <= 3
            parts.append(line)
        body = b"".join(parts)
    elif mode == "readlines":
        lines = inp.readlines()
        assert all(line.count(b"\n") <= 1 for line in lines)
        body = b"".join(lines)
    elif mode == "iter":
        body = b"".join(line for line in inp)
    else:
        return _respond(start_response, b"unknown mode", "400 Bad Request")
    return _respond(start_response, body, ctype="application/octet-stream")


def sha256_view(environ, start_response):
    h = hashlib.sha256()
    n = 0
    chunks = 0
    inp = environ["wsgi.input"]
    while True:
        chunk = inp.read(65536)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
        chunks += 1
    return _json(
        start_response,
        {
            "sha256": h.hexdigest(),
            "length": n,
            "reads": chunks,
            "content_length": environ.get("CONTENT_LENGTH"),
        },
    )


def write_view(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"part1-")
    write(b"part2-")
    return [b"part3"]


def stream(environ, start_response):
    q = _query(environ)
    n = int(q.get("n", "5"))
    size = int(q.get("size", "0"))
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        for i in range(n):
            if size:
                yield (b"%d" % (i % 10)) * size
            else:
                yield b"chunk-%d\n" % i

    return gen()


def drip(environ, start_response):
    """``n`` pieces, each the time it was yielded (``%020.6f\\n``), ``delay`` seconds apart;
    then ``after`` more seconds of work before the iteration ends. ``length=1`` declares
    the Content-Length."""
    q = _query(environ)
    n, delay, after = int(q.get("n", "3")), float(q.get("delay", "0.3")), float(q.get("after", "0"))
    headers = [("Content-Type", "text/plain")]
    if q.get("length") == "1":
        headers.append(("Content-Length", str(21 * n)))
    start_response("200 OK", headers)

    def gen():
        for i in range(n):
            if i:
                time.sleep(delay)
            yield b"%020.6f\n" % time.time()
        time.sleep(after)

    return gen()


def big(environ, start_response):
    size = int(_query(environ).get("size", str(1 << 20)))
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
    )

    def gen():
        left = size
        while left > 0:
            chunk = PATTERN[: min(left, len(PATTERN))]
            left -= len(chunk)
            yield chunk

    return gen()


class TrackedFile(io.FileIO):
    """A real file whose Python-level reads are logged (one line per call)."""

    readlog: str | None = None
    closelog: str | None = None

    def read(self, *args):
        if self.readlog:
            _append(self.readlog, "read")
        return super().read(*args)

    def readinto(self, b):
        if self.readlog:
            _append(self.readlog, "readinto")
        return super().readinto(b)

    def close(self):
        if self.closelog and not self.closed:
            _bump(self.closelog)
        super().close()


def file_view(environ, start_response):
    q = _query(environ)
    size = int(q.get("size", str(1 << 20)))
    kind = q.get("kind", "real")
    data = pattern_bytes(size)
    if kind == "bytesio":
        f = io.BytesIO(data)
    else:
        fd, path = tempfile.mkstemp(prefix="porch-test-file-")
        with os.fdopen(fd, "wb") as w:
            w.write(data)
        f = TrackedFile(path, "r")
        os.unlink(path)
        f.readlog = q.get("readlog")
        f.closelog = q.get("closelog")
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
    )
    return environ["wsgi.file_wrapper"](f, 32768)


def error(environ, start_response):
    msg = _query(environ).get("msg", "boom")
    raise RuntimeError(msg)


def error_mid_body(environ, start_response):
    q = _query(environ)
    headers = [("Content-Type", "text/plain")]
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    start_response("200 OK", headers)
    msg = q.get("msg", "failed mid-body")

    def gen():
        yield b"x" * 100
        raise RuntimeError(msg)

    return gen()


def bad_length(environ, start_response):
    more = _query(environ).get("more") == "1"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
    if more:
        return [b"L" * 100, b"X" * 100]
    return [b"S" * 10]


def hung_in_sleep_here(seconds: float) -> None:
    time.sleep(seconds)


def sleep(environ, start_response):
    s = float(_query(environ).get("s", "1"))
    hung_in_sleep_here(s)
    return _respond(start_response, b"slept")


def spin_forever_here(seconds: float) -> int:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def spin(environ, start_response):
    s = float(_query(environ).get("s", "1"))
    spin_forever_here(s)
    return _respond(start_response, b"spun")


class ClosingIterable:
    """An app iterable that records close() calls in a counter file."""

    def __init__(self, path, chunks, delay, fail):
        self.path = path
        self.chunks = chunks
        self.delay = delay
        self.fail = fail

    def __iter__(self):
        for i in range(self.chunks):
            if self.delay:
                time.sleep(self.delay)
            if self.fail and i == 1:
                raise RuntimeError("close-test failure while iterating")
            yield b"c" * 65536 if self.chunks > 1 else b"closing-body"

    def close(self):
        _bump(self.path)


def close_view(environ, start_response):
    q = _query(environ)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ClosingIterable(
        q["file"], int(q.get("chunks", "1")), float(q.get("delay", "0")), q.get("fail") == "1"
    )


def exc_info_view(environ, start_response):
    q = _query(environ)
    mode = q.get("mode", "before")
    log = q.get("file")
    if mode == "before":
        # Headers not sent yet: the second start_response (with exc_info) replaces them.
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "yes")])
        try:
            raise ValueError("replaced before any output")
        except ValueError:
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "text/plain"), ("X-Second", "yes")],
                sys.exc_info(),
            )
        return [b"error page from the app"]
    if mode == "after":
        # Output already written: start_response must re-raise the exception.
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"partial output")
        try:
            raise ValueError("too late to replace the headers")
        except ValueError:
            try:
                start_response(
                    "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
                )
            except ValueError:
                _append(log, "reraised")
                raise
            _append(log, "returned")
        return [b"should never be seen"]
    if mode == "twice":
        # A second call without exc_info is an error the server must raise.
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            start_response("201 Created", [("Content-Type", "text/plain")])
        except Exception as e:  # noqa: BLE001
            _append(log, "raised " + type(e).__name__)
        else:
            _append(log, "accepted")
        return [b"twice"]
    return _respond(start_response, b"unknown mode", "400 Bad Request")


def pid(environ, start_response):
    pause = _query(environ).get("sleep")
    if pause:
        time.sleep(float(pause))
    return _json(start_response, {"pid": os.getpid(), "thread": threading.get_ident()})


def crash(environ, start_response):
    how = _query(environ).get("how", "exit")
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)


def stderr_view(environ, start_response):
    msg = _query(environ).get("msg", "to wsgi.errors")
    environ["wsgi.errors"].write(msg + "\n")
    environ["wsgi.errors"].flush()
    return _respond(start_response, b"written")


def cookie(environ, start_response):
    return _respond(
        start_response,
        b"cookies set",
        extra=[("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/; HttpOnly")],
    )


def latin1_header(environ, start_response):
    # A header value as a native string: "café" is latin-1, "€" is not.
    value = {"cafe": "caf\u00e9", "euro": "\u20ac"}[_query(environ)["v"]]
    return _respond(start_response, b"header set", extra=[("X-Word", value)])


def status(environ, start_response):
    code = _query(environ).get("code", "200")
    reasons = {"200": "OK", "201": "Created", "204": "No Content", "404": "Not Found",
               "418": "I'm a teapot", "503": "Service Unavailable"}
    st = f"{code} {_query(environ).get('reason') or reasons.get(code, 'Whatever')}"
    if code in ("204", "304"):
        start_response(st, [])
        return []
    return _respond(start_response, f"status {code}".encode(), st)


_barriers: dict[str, threading.Barrier] = {}
_barriers_lock = threading.Lock()


def barrier(environ, start_response):
    q = _query(environ)
    name = q.get("name", "b")
    n = int(q.get("n", "2"))
    with _barriers_lock:
        b = _barriers.get(name)
        if b is None:
            b = _barriers[name] = threading.Barrier(n)
    try:
        b.wait(float(q.get("timeout", "3")))
    except threading.BrokenBarrierError:
        return _respond(start_response, b"barrier broken", "500 Internal Server Error")
    return _json(start_response, {"pid": os.getpid(), "thread": threading.get_ident()})


def no_start_response(environ, start_response):
    return [b"never started"]


def osenv(environ, start_response):
    return _respond(start_response, os.environ.get(_query(environ).get("key", ""), "<unset>").encode())


ROUTES = {
    "/env": env_view,
    "/say": say,
    "/echo": echo,
    "/sha256": sha256_view,
    "/write": write_view,
    "/stream": stream,
    "/big": big,
    "/drip": drip,
    "/file": file_view,
    "/error": error,
    "/error-mid-body": error_mid_body,
    "/bad-length": bad_length,
    "/sleep": sleep,
    "/spin": spin,
    "/close": close_view,
    "/exc-info": exc_info_view,
    "/pid": pid,
    "/crash": crash,
    "/stderr": stderr_view,
    "/cookie": cookie,
    "/latin1-header": latin1_header,
    "/status": status,
    "/barrier": barrier,
    "/no-start-response": no_start_response,
    "/osenv": osenv,
}


def router(environ, start_response):
    path = environ.get("PATH_INFO", "") or "/"
    view = ROUTES.get(path)
    if view is None and path.startswith("/env/"):
        view = env_view
    if view is None:
        return _respond(start_response, b"not found: " + path.encode("latin-1"), "404 Not Found")
    return view(environ, start_response)


def _marking(app):
    def marked(environ, start_response):
        marker = _query(environ).get("marker")
        if marker:
            _append(marker, "called " + environ.get("REQUEST_METHOD", "?") + " " + environ.get("PATH_INFO", ""))
        return app(environ, start_response)

    return marked


_validated = validator(router)
application = _marking(_validated)
raw = _marking(router)
