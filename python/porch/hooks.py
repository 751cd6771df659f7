"""Gunicorn's server hooks, called at porch's matching moments.

A ``gunicorn.conf.py``'s hooks receive stand-ins for Gunicorn's objects, with the
attributes hooks use in practice:

* ``server``: ``pid`` (porch's front), ``cfg`` (the file's settings as attributes; unset
  names are ``None``), ``log``, ``num_workers``, ``address`` (the bind strings).
* ``worker``: ``pid``, ``ppid``, ``age`` (a serial number), ``cfg``, ``log``, ``alive``,
  ``booted``, ``app`` (``app.chdir()`` does nothing: porch already changed directory).
* ``req`` (``pre_request``/``post_request``): ``method``, ``uri``, ``path``, ``query``,
  ``version``, ``scheme``, ``headers`` (``[(NAME, value)]``, names upper-case),
  ``remote_addr``; ``resp``: ``status``, ``status_code``, ``headers``, ``sent``.
* ``log``: ``debug``, ``info``, ``warning``, ``error``, ``critical``, ``exception`` with
  ``%``-style arguments, written to porch's error log.

Worker hooks (``post_fork``, ``post_worker_init``, ``pre_request``, ``post_request``,
``worker_int``, ``worker_abort``, ``worker_exit``) run inside each worker, which reads the
file once more at start. The front's hooks (``on_starting``, ``when_ready``, ``on_reload``,
``on_exit``, ``pre_fork``, ``child_exit``, ``nworkers_changed``) run in a short-lived
interpreter the front starts at that moment: ``python -m porch.hooks NAME SOURCE JSON``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

from porch.pyconfig import namespace

_loaded: dict | None = None
_server = None
_worker = None


class Log:
    """Gunicorn's logger methods, writing one line each to stderr (porch's error log)."""

    def _write(self, level: str, msg, args) -> None:
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args}"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        sys.stderr.write(f"[{stamp}] [{os.getpid()}] [{level}] {text}\n")
        sys.stderr.flush()

    def debug(self, msg, *args, **kw):
        self._write("DEBUG", msg, args)

    def info(self, msg, *args, **kw):
        self._write("INFO", msg, args)

    def warning(self, msg, *args, **kw):
        self._write("WARNING", msg, args)

    warn = warning

    def error(self, msg, *args, **kw):
        self._write("ERROR", msg, args)

    def critical(self, msg, *args, **kw):
        self._write("CRITICAL", msg, args)

    def exception(self, msg, *args, **kw):
        self._write("ERROR", msg, args)
        sys.stderr.write(traceback.format_exc())


class Cfg:
    """The file's settings as attributes; names it does not set read as ``None``."""

    def __init__(self, settings: dict):
        self.__dict__.update(settings)

    def __getattr__(self, name):
        return None


class Server:
    def __init__(self, cfg: Cfg, pid: int, info: dict):
        self.pid = pid
        self.cfg = cfg
        self.log = Log()
        self.num_workers = info.get("workers")
        self.address = info.get("binds", [])
        self.app = _App()


class _App:
    def chdir(self):
        pass


class Worker:
    def __init__(self, cfg: Cfg, pid, ppid, age: int = 0):
        self.pid = pid
        self.ppid = ppid
        self.age = age
        self.cfg = cfg
        self.log = Log()
        self.alive = True
        self.booted = False
        self.app = _App()


class Request:
    """What Gunicorn's request object offers hooks, read from the WSGI environ."""

    def __init__(self, environ: dict):
        self.method = environ.get("REQUEST_METHOD", "")
        self.path = environ.get("PATH_INFO", "")
        self.query = environ.get("QUERY_STRING", "")
        self.uri = self.path + ("?" + self.query if self.query else "")
        proto = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        try:
            major, minor = proto.split("/", 1)[1].split(".", 1)
            self.version = (int(major), int(minor))
        except (IndexError, ValueError):
            self.version = (1, 1)
        self.scheme = environ.get("wsgi.url_scheme", "http")
        self.remote_addr = environ.get("REMOTE_ADDR")
        self.headers = [
            (k[5:].replace("_", "-"), v) for k, v in environ.items() if k.startswith("HTTP_")
        ]
        for k in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(k):
                self.headers.append((k.replace("_", "-"), environ[k]))


class Response:
    def __init__(self):
        self.status = None
        self.status_code = None
        self.headers = []
        self.sent = 0


def _settings(ns: dict) -> dict:
    return {k: v for k, v in ns.items() if not k.startswith("_") and not callable(v)}


def _call(name: str, *args) -> None:
    """Calls the hook if the file defines it; a failing hook is logged, never fatal to the
    request or the worker (Gunicorn logs hook errors the same way)."""
    hook = (_loaded or {}).get(name)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        Log().exception("the %s hook failed", name)


# --- worker side: called by porch's worker extension -----------------------------------


def worker_start(source: str, info_json: str) -> None:
    """Before the app is imported: reads the file and calls ``post_fork(server, worker)``."""
    global _loaded, _server, _worker
    _loaded = namespace(source)
    info = json.loads(info_json)
    cfg = Cfg(_settings(_loaded))
    _server = Server(cfg, os.getppid(), info)
    _worker = Worker(cfg, os.getpid(), os.getppid(), info.get("age", 0))
    _call("post_fork", _server, _worker)


def worker_ready(app):
    """After the app is imported: ``post_worker_init(worker)``; returns the app, wrapped
    when the file has ``pre_request`` or ``post_request``."""
    _worker.booted = True
    _call("post_worker_init", _worker)
    if not (_loaded.get("pre_request") or _loaded.get("post_request")):
        return app
    if _is_async(app):
        # An ASGI app keeps its own callable (the worker tells ASGI from WSGI by it);
        # pre_request/post_request wrap WSGI calls only, as in Gunicorn's ASGI workers.
        return app
    return _with_request_hooks(app)


def _is_async(app):
    import inspect

    call = app if inspect.isroutine(app) else getattr(type(app), "__call__", None)
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(app)


def _with_request_hooks(app):
    def wrapped(environ, start_response):
        req = Request(environ)
        resp = Response()
        _call("pre_request", _worker, req)

        def start(status, headers, exc_info=None):
            resp.status = status
            resp.status_code = int(status.split(" ", 1)[0])
            resp.headers = list(headers)
            return start_response(status, headers, exc_info)

        try:
            result = app(environ, start)
        except BaseException:
            _call("post_request", _worker, req, environ, resp)
            raise
        return _Closing(result, lambda: _call("post_request", _worker, req, environ, resp), resp)

    return wrapped


class _Closing:
    """The app's response iterable; ``post_request`` runs once it is closed, as in Gunicorn."""

    def __init__(self, result, after, resp):
        self._result = result
        self._after = after
        self._resp = resp

    def __iter__(self):
        for chunk in self._result:
            self._resp.sent += len(chunk)
            yield chunk

    def close(self):
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._after()


def worker_abort() -> None:
    """A request of this worker ran past the timeout; porch stops the worker next."""
    if _worker is not None:
        _call("worker_abort", _worker)


def worker_stopping(interrupted: bool) -> None:
    """The worker leaves: ``worker_int(worker)`` if it got INT/TERM, then
    ``worker_exit(server, worker)``."""
    if _worker is None:
        return
    _worker.alive = False
    if interrupted:
        _call("worker_int", _worker)
    _call("worker_exit", _server, _worker)


# --- front side: `python -m porch.hooks NAME SOURCE JSON` --------------------------------


def run_front_hook(name: str, source: str, info: dict) -> None:
    global _loaded
    _loaded = namespace(source)
    cfg = Cfg(_settings(_loaded))
    server = Server(cfg, info.get("pid"), info)
    worker = Worker(cfg, info.get("worker_pid"), info.get("pid"))
    if name in ("pre_fork", "child_exit"):
        _call(name, server, worker)
    elif name == "nworkers_changed":
        _call(name, server, info.get("new"), info.get("old"))
    else:
        _call(name, server)


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit("usage: python -m porch.hooks NAME SOURCE JSON")
    sys.stdout = sys.stderr
    run_front_hook(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))


if __name__ == "__main__":
    main()
