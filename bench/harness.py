"""porch against Gunicorn, Granian, uWSGI and nginx, side by side in one run.

Started by bench/run, which has installed the tools and the virtualenv. Every server runs
on loopback from a temporary directory that is removed at the end; every process started
here is stopped here. See docs/performance.md for the method.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import pwd
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
APPS = BENCH / "apps"
CONF = BENCH / "conf"
VENV = BENCH / ".venv"
RESULTS = BENCH / "results"
# Made absolute: the servers run from bench/apps.
PORCH = Path(os.environ.get("PORCH_BIN", ROOT / "target" / "release" / "porch")).absolute()
# Another porch build to compare with in the same run (`--servers porch,porch-base`), e.g.
# the previous commit's: PORCH_BASE_BIN=/path/to/old/porch bench/run ...
PORCH_BASE = Path(os.environ["PORCH_BASE_BIN"]).absolute() if os.environ.get("PORCH_BASE_BIN") else None
PG_BIN = Path("/usr/lib/postgresql/15/bin")

UPLOAD_SIZE = 1024 * 1024
UPLOAD_SHA256 = hashlib.sha256(b"x" * UPLOAD_SIZE).hexdigest()
ITEM_ROWS = 10_000
SLOW_CLIENTS = 300
CONNECTIONS = 64
# Before each cell the harness samples /proc/stat for a second with nothing of its own
# under load; CPUs busier than this mean other work is running and would skew the cell.
BUSY_FRACTION = 0.15
SERVER_CPU = "0"
LOAD_CPU = "1"
# HTTP/2 rows: h2load with this many connections, each with this many streams in flight
# (as many requests in flight as wrk's connections). h2load offers only this TLS 1.3 cipher
# suite, so every server pays the same for encryption.
H2_CLIENTS = 16
H2_STREAMS = 4
H2_TLS13_CIPHER = "TLS_AES_128_GCM_SHA256"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# What a browser sends with a page request (Firefox 128), so the per-header cost of each
# server shows: wrk's own requests carry only Host.
BROWSER_HEADERS = "".join(
    f'wrk.headers["{k}"] = "{v}"\n'
    for k, v in [
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Referer", "https://example.com/some/page"),
        ("Cookie", "sessionid=abcdefghijklmnopqrstuvwxyz012345; csrftoken=ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"),
        ("Upgrade-Insecure-Requests", "1"),
        ("Sec-Fetch-Dest", "document"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Priority", "u=0, i"),
    ]
)

# --- what runs where -----------------------------------------------------------------

APP_SCENARIOS = {
    "hello": {"module": "hello:application", "path": "/", "title": "WSGI hello world"},
    "hello-browser": {"module": "hello:application", "path": "/", "lua": "browser",
                      "title": "WSGI hello world, 12 browser headers"},
    "django-json": {"module": "benchsite.wsgi:application", "path": "/json", "title": "Django JSON view"},
    "django-db": {"module": "benchsite.wsgi:application", "path": "/db", "title": "Django view, 1 PostgreSQL row"},
    "upload": {"module": "upload:application", "path": "/", "title": "1 MiB POST, sha256 returned"},
    "asgi-hello": {"module": "hello_asgi:app", "path": "/", "title": "ASGI hello world", "asgi": True},
    "fastapi-json": {"module": "fastapi_json:app", "path": "/json", "title": "FastAPI JSON", "asgi": True},
    "django-async-json": {"module": "benchsite.asgi:application", "path": "/async-json",
                          "title": "Django async JSON view (asgi.py)", "asgi": True},
}
STATIC_SCENARIOS = {
    "static-1k": {"file": "1k.bin", "size": 1024, "title": "static file 1 KiB"},
    "static-100k": {"file": "100k.bin", "size": 100 * 1024, "title": "static file 100 KiB"},
    # 16 connections: 64 responses of 10 MiB in flight would measure the socket buffers.
    "static-10m": {"file": "10m.bin", "size": 10 * 1024 * 1024, "title": "static file 10 MiB", "connections": 16},
}
# The same requests over TLS + HTTP/2 (h2load), against the peers that speak it.
H2_SCENARIOS = {
    "h2-static-1k": {"base": "static-1k", "title": "static file 1 KiB, TLS + HTTP/2"},
    "h2-django-json": {"base": "django-json", "title": "Django JSON view, TLS + HTTP/2"},
}
# WebSockets (ASGI servers only), 1 worker pinned: echo round trips under load, and the
# memory that idle open sockets cost.
WS_SCENARIOS = {
    "ws-echo": {"title": "WebSocket echo, 32-byte text messages"},
    "ws-idle": {"title": "WebSocket, 1,000 idle sockets"},
}
WS_MODULE = "ws_echo:app"
WS_CONNECTIONS = 64
WS_MESSAGE = 32
WS_IDLE_SOCKETS = 1000
SCENARIOS = (list(APP_SCENARIOS) + list(STATIC_SCENARIOS) + list(H2_SCENARIOS)
             + ["proxy", "slow-clients", "memory", "ceiling"] + list(WS_SCENARIOS))

APP_SERVERS = ["porch", "porch-t4", "granian-bt4", "granian", "gunicorn-sync", "gunicorn-gthread", "uwsgi",
               "nginx+gunicorn", "uvicorn"]
# The WebSocket rows' servers; `picows` is no ASGI server but a bare picows echo server (no
# app), the ceiling of the load generator itself.
WS_SERVERS = ["porch", "granian", "uvicorn", "uvicorn-sansio", "hypercorn", "daphne", "picows"]
if PORCH_BASE:
    APP_SERVERS.insert(1, "porch-base")
    WS_SERVERS.insert(1, "porch-base")
PORCH_KINDS = ("porch", "porch-t4", "porch-base")
# porch with 4 Python threads per worker runs by default only where threads matter most
# (the database view: a worker waits on PostgreSQL), beside Granian's 4 blocking threads;
# `--servers porch-t4` runs it on every WSGI scenario.
PORCH_T4_SCENARIOS = ("django-db",)
SERVER_LABELS = {
    "porch": "porch",
    "porch-t4": "porch (--threads 4)",
    "porch-base": f"porch, another build ({PORCH_BASE})",
    "granian-bt4": "Granian (--blocking-threads 4)",
    "granian": "Granian (defaults)",
    "gunicorn-sync": "Gunicorn sync",
    "gunicorn-gthread": "Gunicorn gthread (4 threads)",
    "uwsgi": "uWSGI (http-socket)",
    "nginx+gunicorn": "nginx → Gunicorn sync",
    "nginx": "nginx",
    "uvicorn": "Uvicorn (uvloop, httptools)",
    "uvicorn-sansio": "Uvicorn (uvloop, --ws websockets-sansio)",
    "hypercorn": "Hypercorn (uvloop)",
    "daphne": "Daphne",
    "picows": "picows echo server (no ASGI: the client's ceiling)",
}
SERVER_SETTINGS = {
    "porch": "`porch -w N -b 127.0.0.1:PORT MODULE:CALLABLE` (its defaults: 1 thread per worker); "
    "static: `--static /static/=DIR`; proxy: `bench/conf/porch-proxy.toml`; TLS + HTTP/2: "
    "`--certfile CERT --keyfile KEY` (HTTP/2 by ALPN)",
    "porch-t4": "`porch -w N --threads 4 -b 127.0.0.1:PORT MODULE:CALLABLE` (as many Python threads per worker "
    "as Granian's blocking threads)",
    "granian-bt4": "`granian --interface wsgi --workers N --blocking-threads 4` (access log off by default); "
    "TLS + HTTP/2: `--http auto --ssl-certificate CERT --ssl-keyfile KEY`",
    "granian": "`granian --interface wsgi --workers N` (default blocking threads; `--interface asgi` for ASGI apps)",
    "gunicorn-sync": "`gunicorn -k sync -w N` (the default worker; meant to sit behind a buffering proxy)",
    "gunicorn-gthread": "`gunicorn -k gthread -w N --threads 4` (keep-alive 2 s, its default)",
    "uwsgi": "`uwsgi --master --processes N --http-socket ADDR --module M --need-app --strict "
    "--die-on-term --single-interpreter --enable-threads --vacuum --disable-logging` (pyuwsgi wheel)",
    "nginx+gunicorn": "nginx (`worker_processes N`, Gunicorn's documented proxy config: unix socket upstream, "
    "`client_max_body_size 4G`, `proxy_redirect off`) → `gunicorn -k sync -w N -b unix:SOCK`; "
    "TLS + HTTP/2: `listen ... ssl http2`, `ssl_protocols TLSv1.2 TLSv1.3`, `keepalive_requests 100000000` on nginx",
    "uvicorn": "`uvicorn --workers N --loop uvloop --http httptools --no-access-log` (ASGI apps only); "
    "WebSocket rows add `--ws websockets` (its default `auto` when the websockets library is installed)",
    "uvicorn-sansio": "`uvicorn --workers 1 --loop uvloop --http httptools --ws websockets-sansio --no-access-log`",
    "hypercorn": "`hypercorn --workers 1 --worker-class uvloop --bind ADDR` (access log off by default)",
    "daphne": "`daphne -b 127.0.0.1 -p PORT -v 0` (one process, Twisted on asyncio; access log off by default)",
    "picows": "`bench/wsload.py serve` (picows echo listener on uvloop, no ASGI, no app)",
    "nginx": "nginx (`worker_processes N`, `sendfile on`, `tcp_nopush on`, `access_log off`, "
    "`keepalive_requests 100000`; proxy: `upstream { keepalive 64; }`, `proxy_http_version 1.1`, "
    "`proxy_set_header Connection \"\"`; TLS + HTTP/2: `listen ... ssl http2`, `ssl_protocols TLSv1.2 TLSv1.3`, `keepalive_requests 100000000`)",
}
# The comparisons the performance goals name: (scenario, porch variant, peer, goal for
# porch ÷ peer). The report has a table of them for every section where both ran.
# (scenario, porch variant, peer, goal[, the only section it applies to])
TARGETS = [
    ("hello", "porch", "granian-bt4", 1.0),
    ("hello-browser", "porch", "granian-bt4", 1.0),
    ("django-json", "porch", "granian-bt4", 1.05, "1 worker"),
    ("django-json", "porch", "granian-bt4", 1.0, "2 workers"),
    ("upload", "porch", "granian-bt4", 1.0),
    ("django-db", "porch-t4", "granian-bt4", 1.0),
    ("static-1k", "porch", "nginx", 1.0),
    ("static-100k", "porch", "nginx", 0.9),
    ("static-10m", "porch", "nginx", 0.9),
    ("proxy", "porch", "nginx", 1.0),
    ("h2-static-1k", "porch", "nginx", 0.9),
    ("h2-django-json", "porch", "granian-bt4", 1.0),
    ("asgi-hello", "porch", "granian", 1.0),
    ("asgi-hello", "porch", "uvicorn", 1.0),
    ("fastapi-json", "porch", "granian", 1.0),
    ("fastapi-json", "porch", "uvicorn", 1.0),
    ("django-async-json", "porch", "granian", 1.0),
    ("django-async-json", "porch", "uvicorn", 1.0),
    ("ws-echo", "porch", "granian", 1.0),
    ("ws-echo", "porch", "uvicorn", 1.0),
]


class NotAvailable(Exception):
    """The server cannot run this scenario (yet); the reason goes into the table."""


# --- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A started process in its own session, with its output in a log file."""

    def __init__(self, name, cmd, *, workdir, env=None, cwd=None, user=None):
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log_path = Path(workdir) / f"{name}-{int(time.monotonic() * 1000)}.log"
        self.log = open(self.log_path, "wb")
        kwargs = {}
        if user is not None:
            kwargs.update(user=user, group=pwd.getpwnam(user).pw_gid, extra_groups=[])
        self.popen = subprocess.Popen(
            self.cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
            **kwargs,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self, limit=4000) -> str:
        self.log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)
        # Workers left behind by a master that died first share its process group.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks of one process, all its threads (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def tree_ticks(roots: list[int]) -> int:
    return sum(cpu_ticks(pid) for root in roots for pid in process_tree(root))


def cpu_times():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]), idle


def cpu_busy(seconds: float) -> float:
    """Fraction of all CPUs busy over `seconds`."""
    total0, idle0 = cpu_times()
    time.sleep(seconds)
    total1, idle1 = cpu_times()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def memory_of(roots: list[int]) -> dict:
    """Total RSS and PSS (bytes) of the process trees under roots, and how many processes."""
    rss = pss = count = 0
    for root in roots:
        for pid in process_tree(root):
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            count += 1
            for line in text.splitlines():
                key, _, rest = line.partition(":")
                if key == "Rss":
                    rss += int(rest.split()[0]) * 1024
                elif key == "Pss":
                    pss += int(rest.split()[0]) * 1024
    return {"rss": rss, "pss": pss, "processes": count}


def wait_port(port: int, procs: list[Proc], timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise NotAvailable(f"{p.name} exited with {p.popen.returncode}: {last_line(p.output())}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise NotAvailable(f"nothing listened on port {port} within {timeout:.0f} s")


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:160] if lines else "no output"


def http(url, data=None, timeout=10.0):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/octet-stream")
    # The TLS rows use a throwaway self-signed certificate.
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --- the bench machinery ---------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="porch-bench-"))
        os.chmod(self.work, 0o755)
        self.procs: list[Proc] = []
        self.pg: dict | None = None
        self.pg_error: str | None = None
        self.nginx_user = "www-data"
        try:
            pwd.getpwnam(self.nginx_user)
        except KeyError:
            self.nginx_user = "nobody"
        self.static_dir = self.work / "static"
        self.static_dir.mkdir()
        rnd = random.Random(6)
        for spec in STATIC_SCENARIOS.values():
            (self.static_dir / spec["file"]).write_bytes(rnd.randbytes(spec["size"]))
        for path in [self.static_dir, *self.static_dir.iterdir()]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        self.lua = {}
        for name, body in {
            "get": "",
            "browser": BROWSER_HEADERS,
            "post": 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n' % UPLOAD_SIZE,
        }.items():
            path = self.work / f"{name}.lua"
            path.write_text(body + WRK_DONE)
            self.lua[name] = path
        self._porch_ok: bool | str | None = None
        self._tls: tuple[Path, Path] | str | None = None

    # -- processes

    def start(self, name, cmd, **kw) -> Proc:
        p = Proc(name, cmd, workdir=self.work, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: Proc, **kw):
        p.stop(**kw)
        if p in self.procs:
            self.procs.remove(p)

    def close(self):
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
        if self.pg:
            self.pg["proc"].stop(sig=signal.SIGINT)
        if not self.args.keep_workdir:
            shutil.rmtree(self.work, ignore_errors=True)

    def py_env(self, extra=None):
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        env.update(
            VIRTUAL_ENV=str(VENV),
            PATH=f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            PYTHONPATH=str(APPS),
            DJANGO_SETTINGS_MODULE="benchsite.settings",
            PYTHONDONTWRITEBYTECODE="1",
        )
        if self.pg:
            env.update(BENCH_PG_HOST="127.0.0.1", BENCH_PG_PORT=str(self.pg["port"]))
        if extra:
            env.update(extra)
        return env

    # -- PostgreSQL

    def start_postgres(self):
        """A throwaway PostgreSQL 15 as the postgres user, on CPU 1 with the load generator."""
        try:
            user = "postgres"
            pwd.getpwnam(user)
            if not (PG_BIN / "postgres").exists():
                raise NotAvailable(f"{PG_BIN}/postgres not installed")
            pgdir = self.work / "pg"
            pgdir.mkdir()
            shutil.chown(pgdir, user, user)
            data = pgdir / "data"
            out = subprocess.run(
                [PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "bench", "--no-sync", "-E", "UTF8"],
                user=user, group=pwd.getpwnam(user).pw_gid, extra_groups=[],
                capture_output=True, text=True, cwd=pgdir,
            )
            if out.returncode != 0:
                raise NotAvailable(f"initdb failed: {last_line(out.stderr)}")
            port = free_port()
            proc = self.start(
                "postgres",
                ["taskset", "-c", LOAD_CPU, PG_BIN / "postgres", "-D", data, "-p", port, "-k", pgdir,
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "max_connections=100", "-c", "shared_buffers=128MB"],
                user=user, cwd=pgdir,
            )
            self.procs.remove(proc)  # stopped last, in close()
            self.pg = {"port": port, "proc": proc}
            wait_port(port, [proc], 30)
            psql = ["/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port), "-U", "bench"]
            for _ in range(50):
                r = subprocess.run(psql + ["-d", "postgres", "-c", "select 1"], capture_output=True, text=True)
                if r.returncode == 0:
                    break
                time.sleep(0.2)
            subprocess.run(psql + ["-d", "postgres", "-c", "create database bench"], check=True, capture_output=True)
            sql = (
                "create table bench_item (id bigint primary key, name varchar(64) not null, price integer not null);"
                f"insert into bench_item select i, 'item ' || i, (i * 37) % 1000 from generate_series(1, {ITEM_ROWS}) i;"
                "analyze bench_item;"
            )
            subprocess.run(psql + ["-d", "bench", "-c", sql], check=True, capture_output=True)
            log(f"PostgreSQL 15 on 127.0.0.1:{port} with {ITEM_ROWS} rows")
        except (NotAvailable, subprocess.CalledProcessError, OSError, KeyError) as e:
            msg = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) and e.stderr else str(e)
            self.pg_error = f"PostgreSQL did not start: {last_line(str(msg))}"
            log(self.pg_error)
            if self.pg:
                self.pg["proc"].stop(sig=signal.SIGINT)
                self.pg = None

    # -- nginx

    def nginx(self, name, workers, server_block, pin, upstream_block=""):
        d = self.work / f"{name}-{free_port()}"
        d.mkdir()
        os.chmod(d, 0o755)
        conf = d / "nginx.conf"
        conf.write_text(
            NGINX_CONF.substitute(
                user=self.nginx_user, workers=workers, dir=d, upstream=upstream_block, server=server_block
            )
        )
        test = subprocess.run(["nginx", "-t", "-q", "-p", d, "-c", conf, "-e", "stderr"], capture_output=True, text=True)
        if test.returncode != 0:
            raise NotAvailable(f"nginx config: {last_line(test.stderr)}")
        return self.start(name, pin + ["nginx", "-p", d, "-c", conf, "-e", "stderr"])

    # -- porch

    def porch_check(self):
        if self._porch_ok is None:
            if not PORCH.exists():
                self._porch_ok = f"{PORCH.relative_to(ROOT) if PORCH.is_relative_to(ROOT) else PORCH} not built"
            else:
                try:
                    r = subprocess.run([PORCH, "--version"], capture_output=True, text=True, timeout=10)
                    self._porch_ok = True if r.returncode == 0 else f"porch --version exited {r.returncode}"
                except (OSError, subprocess.TimeoutExpired) as e:
                    self._porch_ok = f"porch --version failed: {e}"
        if self._porch_ok is not True:
            raise NotAvailable(self._porch_ok)

    # -- servers

    def start_server(self, kind, scenario, workers, pinned):
        """Start `kind` for `scenario`; return (procs, url)."""
        pin = ["taskset", "-c", SERVER_CPU] if pinned else []
        port = free_port()
        addr = f"127.0.0.1:{port}"
        env = self.py_env()
        procs: list[Proc] = []
        tls = None
        base = scenario
        if scenario in H2_SCENARIOS:
            base = H2_SCENARIOS[scenario]["base"]
            tls = self.tls_files()
            if kind not in ("porch", "porch-t4", "porch-base", "granian", "granian-bt4", "nginx", "nginx+gunicorn"):
                raise NotAvailable(f"{kind} does not serve TLS + HTTP/2 in this harness")
        porch_tls = ["--certfile", tls[0], "--keyfile", tls[1]] if tls else []
        listen = nginx_listen(port, tls)
        if base in APP_SCENARIOS or base in ("slow-clients", "memory"):
            app = APP_SCENARIOS.get(base, APP_SCENARIOS["hello" if base == "slow-clients" else "django-json"])
            module = app["module"]
            if base == "django-db" and not self.pg:
                raise NotAvailable(self.pg_error or "no PostgreSQL")
            asgi = app.get("asgi", False)
            if asgi and kind == "granian-bt4":
                raise NotAvailable("blocking threads are a WSGI setting; see Granian (defaults)")
            if asgi and kind == "porch-t4":
                raise NotAvailable("threads per worker are a WSGI setting; see porch")
            if asgi and kind not in ("porch", "porch-base", "granian", "uvicorn"):
                raise NotAvailable(f"{kind} runs WSGI apps only")
            if kind == "uvicorn" and not asgi:
                raise NotAvailable("uvicorn runs ASGI apps only")
            if kind in ("porch", "porch-t4"):
                self.porch_check()
                threads = ["--threads", "4"] if kind == "porch-t4" else []
                procs.append(self.start(kind, pin + [PORCH, "-w", workers, *threads, "-b", addr, *porch_tls, module],
                                        env=env, cwd=APPS))
            elif kind == "porch-base":
                procs.append(self.start(kind, pin + [PORCH_BASE, "-w", workers, "-b", addr, *porch_tls, module],
                                        env=env, cwd=APPS))
            elif kind in ("gunicorn-sync", "gunicorn-gthread"):
                extra = ["-k", "sync"] if kind == "gunicorn-sync" else ["-k", "gthread", "--threads", "4"]
                procs.append(self.start(kind, pin + [VENV / "bin/gunicorn", "-w", workers, *extra, "-b", addr,
                                                     "--log-level", "warning", module], env=env, cwd=APPS))
            elif kind in ("granian", "granian-bt4"):
                extra = ["--blocking-threads", "4"] if kind == "granian-bt4" else []
                if tls:
                    extra += ["--http", "auto", "--ssl-certificate", tls[0], "--ssl-keyfile", tls[1]]
                procs.append(self.start(kind, pin + [VENV / "bin/granian", "--interface", "asgi" if asgi else "wsgi",
                                                     "--host", "127.0.0.1",
                                                     "--port", port, "--workers", workers, *extra,
                                                     "--log-level", "warning", module], env=env, cwd=APPS))
            elif kind == "uwsgi":
                procs.append(self.start(kind, pin + [VENV / "bin/uwsgi", "--master", "--processes", workers,
                                                     "--http-socket", addr, "--module", module, "--chdir", APPS,
                                                     "--need-app", "--strict", "--die-on-term", "--single-interpreter",
                                                     "--enable-threads", "--vacuum", "--disable-logging"],
                                        env=env, cwd=APPS))
            elif kind == "nginx+gunicorn":
                sock = self.work / f"gunicorn-{port}.sock"
                procs.append(self.start("gunicorn", pin + [VENV / "bin/gunicorn", "-w", workers, "-k", "sync",
                                                           "-b", f"unix:{sock}", "--log-level", "warning", module],
                                        env=env, cwd=APPS))
                try:
                    procs.append(self.nginx("nginx-front", workers, NGINX_FRONT.substitute(listen=listen), pin,
                                            NGINX_UPSTREAM_GUNICORN.substitute(sock=sock)))
                except NotAvailable:
                    self.stop(procs[0])
                    raise
            elif kind == "uvicorn":
                procs.append(self.start(kind, pin + [VENV / "bin/uvicorn", "--workers", workers, "--host", "127.0.0.1",
                                                     "--port", port, "--loop", "uvloop", "--http", "httptools",
                                                     "--no-access-log", "--log-level", "warning", module],
                                        env=env, cwd=APPS))
            else:
                raise NotAvailable(f"{kind} does not run WSGI apps")
            path = app["path"]
        elif base in STATIC_SCENARIOS:
            path = f"/static/{STATIC_SCENARIOS[base]['file']}"
            if kind == "porch":
                self.porch_check()
                procs.append(self.start("porch", pin + [PORCH, "-w", workers, "-b", addr, *porch_tls, "--static",
                                                        f"/static/={self.static_dir}", "hello:application"],
                                        env=env, cwd=APPS))
            elif kind == "nginx":
                procs.append(self.nginx("nginx", workers, NGINX_STATIC.substitute(listen=listen, dir=self.static_dir),
                                        pin))
            else:
                raise NotAvailable(f"{kind} has no static route")
        elif base == "proxy":
            path = "/1k.bin"
            up = self.upstream_port
            if kind == "porch":
                self.porch_check()
                conf = self.work / f"porch-proxy-{port}.toml"
                conf.write_text(string.Template((CONF / "porch-proxy.toml").read_text()).substitute(
                    port=port, upstream=up, workers=workers))
                r = subprocess.run([PORCH, "--check-config", "-c", conf], capture_output=True, text=True, cwd=APPS, env=env)
                if r.returncode != 0:
                    why = last_line(r.stderr or r.stdout).replace(str(conf), "porch-proxy.toml")
                    raise NotAvailable(f"porch rejected bench/conf/porch-proxy.toml: {why}")
                procs.append(self.start("porch", pin + [PORCH, "-c", conf], env=env, cwd=APPS))
            elif kind == "nginx":
                procs.append(self.nginx("nginx-proxy", workers, NGINX_PROXY.substitute(listen=listen), pin,
                                        NGINX_UPSTREAM_TCP.substitute(up=up)))
            else:
                raise NotAvailable(f"{kind} is not a reverse proxy")
        else:
            raise ValueError(scenario)

        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}"
        try:
            wait_port(port, procs)
            data = b"x" * UPLOAD_SIZE if base == "upload" else None
            self.validate(url, data, base, procs)
        except BaseException:
            for p in procs:
                self.stop(p)
            raise
        return procs, url

    # -- WebSockets

    def start_ws_server(self, kind, workers=1, pinned=True):
        """Start `kind` with the ASGI echo app (bench/apps/ws_echo.py); return (procs, ws URL).
        Ready when an HTTP GET answers the app's body (not for the picows listener, which
        speaks only WebSocket) and one WebSocket round trip comes back."""
        pin = ["taskset", "-c", SERVER_CPU] if pinned else []
        port = free_port()
        addr = f"127.0.0.1:{port}"
        env = self.py_env()
        py = VENV / "bin/python"
        if kind in ("porch", "porch-base"):
            self.porch_check()
            binary = PORCH if kind == "porch" else PORCH_BASE
            cmd = [binary, "-w", workers, "-b", addr, WS_MODULE]
        elif kind == "granian":
            cmd = [VENV / "bin/granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", port,
                   "--workers", workers, "--log-level", "warning", WS_MODULE]
        elif kind in ("uvicorn", "uvicorn-sansio"):
            cmd = [VENV / "bin/uvicorn", "--workers", workers, "--host", "127.0.0.1", "--port", port,
                   "--loop", "uvloop", "--http", "httptools",
                   "--ws", "websockets" if kind == "uvicorn" else "websockets-sansio",
                   "--no-access-log", "--log-level", "warning", WS_MODULE]
        elif kind == "hypercorn":
            cmd = [VENV / "bin/hypercorn", "--workers", workers, "--worker-class", "uvloop", "--bind", addr,
                   "--log-level", "warning", WS_MODULE]
        elif kind == "daphne":
            if workers != 1:
                raise NotAvailable("Daphne runs one process (no worker count)")
            cmd = [VENV / "bin/daphne", "-b", "127.0.0.1", "-p", port, "-v", "0", WS_MODULE]
        elif kind == "picows":
            cmd = [py, BENCH / "wsload.py", "serve", "127.0.0.1", port]
        else:
            raise NotAvailable(f"{kind} does not serve WebSockets in this harness")
        if not Path(cmd[0]).exists():
            raise NotAvailable(f"{cmd[0]} not found (bench/requirements.txt not installed?)")
        procs = [self.start(kind, pin + cmd, env=env, cwd=APPS)]
        url = f"ws://{addr}/echo"
        try:
            wait_port(port, procs)
            if kind != "picows":
                self.validate(f"http://{addr}/", None, "ws-echo", procs)
            last = "no answer"
            deadline = time.monotonic() + 30
            while True:
                if not procs[0].alive():
                    raise NotAvailable(f"{kind} exited: {last_line(procs[0].output())}")
                r = subprocess.run([py, BENCH / "wsload.py", "check", url], capture_output=True, text=True,
                                   timeout=30, env=env)
                if r.returncode == 0:
                    break
                last = last_line(r.stderr or r.stdout)
                if time.monotonic() > deadline:
                    raise NotAvailable(f"no WebSocket echo: {last}")
                time.sleep(0.2)
        except BaseException:
            for p in procs:
                self.stop(p)
            raise
        return procs, url

    def wsload_echo(self, url, seconds, pinned=True) -> dict:
        cmd = (["taskset", "-c", LOAD_CPU] if pinned else []) + [
            VENV / "bin/python", BENCH / "wsload.py", "echo", url, WS_CONNECTIONS, seconds, WS_MESSAGE]
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=seconds + 60,
                           env=self.py_env())
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"wsload gave no result: {last_line(r.stderr or r.stdout)}") from None

    def ws_echo(self):
        rows = []
        a = self.args
        log(f"== WebSocket echo ({WS_CONNECTIONS} sockets, {WS_MESSAGE}-byte text round trips; "
            f"server on CPU {SERVER_CPU}, client on CPU {LOAD_CPU})")
        for kind in self.servers_for("ws-echo"):
            row = {"section": "websocket", "scenario": "ws-echo", "server": kind, "workers": 1, "pinned": True,
                   "busy_before": self.wait_quiet()}
            t0 = time.monotonic()
            try:
                procs, url = self.start_ws_server(kind)
            except NotAvailable as e:
                row.update(status="n/a", reason=str(e))
                rows.append(row)
                log(f"  ws-echo {kind:15} n/a ({e})")
                continue
            try:
                idle = memory_of([p.pid for p in procs])
                self.wsload_echo(url, a.warmup)
                roots = [p.pid for p in procs]
                front = [procs[0].pid] if kind in PORCH_KINDS else []
                tree0, front0 = tree_ticks(roots), sum(cpu_ticks(pid) for pid in front)
                samples = [self.wsload_echo(url, a.duration) for _ in range(a.runs)]
                tree1, front1 = tree_ticks(roots), sum(cpu_ticks(pid) for pid in front)
                row.update(summarize(samples, memory_of(roots)))
                cpus = [s["client_cpu"] for s in samples if s.get("client_cpu") is not None]
                row["client_cpu"] = statistics.median(cpus) if cpus else None
                firsts = [s["first_error"] for s in samples if s.get("first_error")]
                if firsts:
                    row["first_error"] = firsts[0]
                if row["requests"]:
                    us = 1e6 / CLK_TCK / row["requests"]
                    row["cpu_us"] = (tree1 - tree0) * us
                    row["front_cpu_us"] = (front1 - front0) * us if front else None
                row.update(status="ok", idle_rss=idle["rss"], idle_pss=idle["pss"])
                for p in procs:
                    if not p.alive():
                        row["note"] = f"{p.name} died: {last_line(p.output())}"
                log(f"  ws-echo {kind:15} {row['rps']:>10,.0f} msg/s  p50 {fmt_ms(row['p50_ms'])}"
                    f"  p99 {fmt_ms(row['p99_ms'])}  errors {row['errors']}"
                    f"{' (' + row['first_error'] + ')' if row.get('first_error') else ''}  pss {mib(row['pss'])}"
                    f"  cpu {fmt_cpu(row)}  client cpu {fmt_share(row['client_cpu'])}"
                    f"  ({time.monotonic() - t0:.0f} s)")
            except Exception as e:
                row.update(status="n/a", reason=f"failed during load: {e}")
                log(f"  ws-echo {kind:15} n/a ({row['reason']})")
            finally:
                for p in procs:
                    self.stop(p)
            rows.append(row)
        return rows

    def ws_idle(self):
        rows = []
        n = WS_IDLE_SOCKETS
        log(f"== WebSocket idle sockets ({n} open, nothing sent; server on CPU {SERVER_CPU})")
        for kind in self.servers_for("ws-idle"):
            row = {"section": "websocket idle", "scenario": "ws-idle", "server": kind, "workers": 1, "pinned": True}
            try:
                procs, url = self.start_ws_server(kind)
            except NotAvailable as e:
                row.update(status="n/a", reason=str(e))
                rows.append(row)
                log(f"  ws-idle {kind:15} n/a ({e})")
                continue
            hold = None
            try:
                roots = [p.pid for p in procs]
                time.sleep(1.0)
                before = memory_of(roots)
                hold = self.start("wshold", ["taskset", "-c", LOAD_CPU, VENV / "bin/python", BENCH / "wsload.py",
                                             "hold", url, n, 120], env=self.py_env())
                opened = None
                deadline = time.monotonic() + 90
                while opened is None and time.monotonic() < deadline:
                    if not hold.alive():
                        break
                    for line in hold.output(100_000).splitlines():
                        if line.startswith("{"):
                            opened = json.loads(line)
                            break
                    else:
                        time.sleep(0.2)
                if opened is None:
                    raise RuntimeError(f"client did not open its sockets: {last_line(hold.output())}")
                time.sleep(1.0)
                held = memory_of(roots)
                self.stop(hold)
                lines = [ln for ln in hold.log_path.read_text(errors="replace").splitlines() if ln.startswith("{")]
                end = json.loads(lines[-1]) if len(lines) > 1 else {}
                open_n = end.get("open_at_end", opened["open"])
                row.update(status="ok", idle_rss=before["rss"], idle_pss=before["pss"], rss=held["rss"],
                           pss=held["pss"], processes=held["processes"], open=opened["open"], open_at_end=open_n,
                           errors=opened["connect_errors"] + end.get("errors", 0),
                           connect_seconds=opened.get("connect_seconds"),
                           first_error=opened.get("first_error") or end.get("first_error"))
                if opened["open"]:
                    row["rss_per_socket"] = (held["rss"] - before["rss"]) / opened["open"]
                    row["pss_per_socket"] = (held["pss"] - before["pss"]) / opened["open"]
                log(f"  ws-idle {kind:15} {opened['open']} open ({open_n} at end, {row['errors']} errors)"
                    f"  RSS {mib(before['rss'])} → {mib(held['rss'])}  PSS {mib(before['pss'])} → {mib(held['pss'])}"
                    f"  {kib(row.get('rss_per_socket'))} RSS per socket")
            except Exception as e:
                row.update(status="n/a", reason=f"failed: {e}")
                log(f"  ws-idle {kind:15} n/a ({row['reason']})")
            finally:
                if hold is not None:
                    self.stop(hold)
                for p in procs:
                    self.stop(p)
            rows.append(row)
        return rows

    def tls_files(self):
        """A throwaway self-signed certificate for 127.0.0.1 (ECDSA P-256; the key in PKCS#8,
        which Granian requires), made once per run with the openssl command."""
        if self._tls is None:
            d = self.work / "tls"
            d.mkdir()
            cert, key = d / "cert.pem", d / "key.pem"
            r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                self._tls = f"openssl could not make a certificate: {last_line(r.stderr)}"
            else:
                for f in (cert, key):
                    os.chmod(f, 0o644)
                self._tls = (cert, key)
        if isinstance(self._tls, str):
            raise NotAvailable(self._tls)
        return self._tls

    def validate(self, url, data, scenario, procs, timeout=60.0):
        """Wait until the server gives the right answer (lazy workers may still be importing).
        Over TLS this asks in HTTP/1.1; h2load then checks that HTTP/2 was negotiated."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            for p in procs:
                if not p.alive():
                    raise NotAvailable(f"{p.name} exited: {last_line(p.output())}")
            try:
                status, body = http(url, data)
                if status == 200 and expected_body(scenario, body):
                    return
                last = f"HTTP {status}: {body[:80]!r}"
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            time.sleep(0.2)
        raise NotAvailable(f"wrong answer: {last}")

    # -- load

    def wrk(self, url, seconds, pinned, method="get", connections=CONNECTIONS, closes=False) -> dict:
        """One wrk run. `closes`: the server closes every connection after its response
        without saying `Connection: close` (uWSGI's http-socket); wrk counts each such close
        as a read error, so read errors are not counted as errors for it."""
        cmd = (["taskset", "-c", LOAD_CPU] if pinned else []) + [
            "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "-s", self.lua[method], url,
        ]
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=seconds + 60)
        for line in r.stdout.splitlines():
            if line.startswith("BENCHJSON "):
                d = json.loads(line[len("BENCHJSON "):])
                secs = d["duration_us"] / 1e6
                errors = d["connect"] + (0 if closes else d["read"]) + d["write"] + d["status"] + d["timeout"]
                ok = d["requests"] > 0
                return {
                    "rps": d["requests"] / secs if secs else 0.0,
                    "requests": d["requests"],
                    "errors": errors,
                    "error_kinds": {k: d[k] for k in ("connect", "read", "write", "status", "timeout") if d[k]},
                    "p50_ms": d["p50"] / 1000 if ok else None,
                    "p99_ms": d["p99"] / 1000 if ok else None,
                }
        raise RuntimeError(f"wrk gave no result: {last_line(r.stderr or r.stdout)}")

    def h2load(self, url, seconds, pinned) -> dict:
        """One h2load run over TLS + HTTP/2, in the shape of wrk()'s result. h2load reports no
        percentiles, so they come from its per-request log (one line per response: start
        time, status, microseconds). A run that did not negotiate h2 by ALPN is an error."""
        log_path = self.work / f"h2load-{int(time.monotonic() * 1000)}.log"
        cmd = (["taskset", "-c", LOAD_CPU] if pinned else []) + [
            "h2load", "-t1", f"-c{H2_CLIENTS}", f"-m{H2_STREAMS}", f"-D{seconds}",
            f"--tls13-ciphers={H2_TLS13_CIPHER}", f"--log-file={log_path}", url,
        ]
        try:
            r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=seconds + 60)
            out = r.stdout
            proto = re.search(r"Application protocol: (\S+)", out)
            done = re.search(r"finished in ([\d.]+)(us|ms|s),", out)
            req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                            r"(\d+) errored, (\d+) timeout", out)
            codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
            if not (done and req and codes):
                raise RuntimeError(f"h2load gave no result: {last_line(r.stderr or out)}")
            if not proto or proto.group(1) != "h2":
                raise RuntimeError(f"HTTP/2 not negotiated (ALPN: {proto.group(1) if proto else 'none'})")
            secs = float(done.group(1)) / {"us": 1e6, "ms": 1e3, "s": 1.0}[done.group(2)]
            _, _, _, succeeded, failed, errored, timeouts = (int(x) for x in req.groups())
            times = []
            if log_path.exists():
                with open(log_path) as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) == 3:
                            times.append(int(parts[2]))
            times.sort()

            def pct_ms(q):
                return times[min(len(times) - 1, int(q * len(times)))] / 1000 if times else None

            tls = re.search(r"TLS Protocol: (\S+)", out)
            cipher = re.search(r"Cipher: (\S+)", out)
            kinds = {"failed": failed, "errored": errored, "timeout": timeouts,
                     "4xx": int(codes.group(3)), "5xx": int(codes.group(4))}
            return {
                "rps": succeeded / secs if secs else 0.0,
                "requests": succeeded,
                # h2load counts a 4xx/5xx answer, a reset stream and a timeout as failed.
                "errors": failed,
                "error_kinds": {k: v for k, v in kinds.items() if v},
                "p50_ms": pct_ms(0.50),
                "p99_ms": pct_ms(0.99),
                "tls": f"{tls.group(1) if tls else '?'} {cipher.group(1) if cipher else '?'}",
            }
        finally:
            log_path.unlink(missing_ok=True)

    def measure(self, url, pinned, method, runs, procs, *, closes=False, h2=False, connections=CONNECTIONS,
                front=None):
        """Warm up, then `runs` measured runs; the median and the CPU time per request of the
        server's whole process tree and, when given, of its front (`front`: pids whose own
        CPU time counts, without their children)."""
        a = self.args

        def load(seconds):
            if h2:
                return self.h2load(url, seconds, pinned)
            return self.wrk(url, seconds, pinned, method, connections=connections, closes=closes)

        load(a.warmup)
        roots = [p.pid for p in procs]
        tree0, front0 = tree_ticks(roots), sum(cpu_ticks(pid) for pid in front or [])
        samples = [load(a.duration) for _ in range(runs)]
        tree1, front1 = tree_ticks(roots), sum(cpu_ticks(pid) for pid in front or [])
        mem = memory_of(roots)
        out = summarize(samples, mem)
        if out["requests"]:
            us = 1e6 / CLK_TCK / out["requests"]
            out["cpu_us"] = (tree1 - tree0) * us
            out["front_cpu_us"] = (front1 - front0) * us if front else None
        tls = [s["tls"] for s in samples if s.get("tls")]
        if tls:
            out["tls"] = tls[0]
        return out

    def wait_quiet(self):
        """Wait (up to --wait-quiet seconds) until the CPUs are idle; return the busy
        fraction seen last, which the report uses to flag cells measured on a busy machine."""
        deadline = time.monotonic() + self.args.wait_quiet
        while True:
            busy = cpu_busy(1.0)
            if busy <= BUSY_FRACTION or time.monotonic() >= deadline:
                if busy > BUSY_FRACTION:
                    log(f"  (machine busy: {busy:.0%} of the CPUs used by other work)")
                return round(busy, 3)

    # -- scenarios

    def run_cell(self, section, scenario, kind, workers, pinned, runs):
        row = {
            "section": section, "scenario": scenario, "server": kind, "workers": workers, "pinned": pinned,
            "busy_before": self.wait_quiet(),
        }
        t0 = time.monotonic()
        try:
            procs, url = self.start_server(kind, scenario, workers, pinned)
        except NotAvailable as e:
            row.update(status="n/a", reason=str(e))
            log(f"  {section:9} {scenario:14} {kind:17} n/a ({e})")
            return row
        try:
            idle = memory_of([p.pid for p in procs])
            method = "post" if scenario == "upload" else APP_SCENARIOS.get(scenario, {}).get("lua", "get")
            connections = STATIC_SCENARIOS.get(scenario, {}).get("connections", CONNECTIONS)
            # porch's front is its main process (the workers are its children); the classic
            # stack's front is nginx, master and workers.
            if kind in PORCH_KINDS:
                front = [procs[0].pid]
            elif kind == "nginx+gunicorn":
                front = process_tree(procs[1].pid)
            else:
                front = None
            row.update(self.measure(url, pinned, method, runs, procs, closes=kind == "uwsgi",
                                    h2=scenario in H2_SCENARIOS, connections=connections, front=front))
            row.update(status="ok", idle_rss=idle["rss"], idle_pss=idle["pss"])
            log(f"  {section:9} {scenario:14} {kind:17} {row['rps']:>10,.0f} req/s  p50 {fmt_ms(row['p50_ms'])}"
                f"  p99 {fmt_ms(row['p99_ms'])}  errors {row['errors']}  pss {mib(row['pss'])}"
                f"  cpu {fmt_cpu(row)}{'  ' + row['tls'] if row.get('tls') else ''}"
                f"  ({time.monotonic() - t0:.0f} s)")
        except Exception as e:  # a crash of one cell must not lose the whole run
            row.update(status="n/a", reason=f"failed during load: {e}")
            log(f"  {section:9} {scenario:14} {kind:17} n/a ({row['reason']})")
        finally:
            for p in procs:
                if not p.alive() and row.get("status") == "ok":
                    row["note"] = f"{p.name} died: {last_line(p.output())}"
                self.stop(p)
        return row

    def servers_for(self, scenario):
        if scenario in APP_SCENARIOS:
            pool = APP_SERVERS
            if scenario not in PORCH_T4_SCENARIOS and "porch-t4" not in self.args.servers:
                pool = [s for s in pool if s != "porch-t4"]
        elif scenario in STATIC_SCENARIOS or scenario == "proxy" or scenario == "h2-static-1k":
            pool = ["porch", "nginx"]
        elif scenario == "h2-django-json":
            pool = ["porch", "granian-bt4", "nginx+gunicorn"]
        elif scenario == "slow-clients":
            pool = ["porch", "nginx+gunicorn", "gunicorn-sync"]
        elif scenario == "memory":
            pool = [s for s in APP_SERVERS if s != "porch-t4" or "porch-t4" in self.args.servers]
        elif scenario in WS_SCENARIOS:
            pool = WS_SERVERS
        else:
            pool = []
        if self.args.servers:
            pool = [s for s in pool if s in self.args.servers]
        return pool

    def start_upstream(self):
        """The proxy scenario's upstream: nginx serving the 1 KiB file, on CPU 1."""
        port = free_port()
        p = self.nginx("nginx-upstream", 1, NGINX_UPSTREAM_SERVER.substitute(port=port, dir=self.static_dir),
                       ["taskset", "-c", LOAD_CPU])
        wait_port(port, [p])
        self.upstream_port = port
        return p

    def throughput(self, scenarios):
        rows = []
        configs = [("1 worker", 1, True, self.args.runs)]
        if not self.args.no_reference:
            n = self.args.reference_workers
            configs.append((f"{n} workers", n, False, 1))
        for section, workers, pinned, runs in configs:
            log(f"== {section}{' (server on CPU 0, load on CPU 1)' if pinned else ' (unpinned)'}")
            for scenario in scenarios:
                upstream = None
                if scenario == "proxy":
                    try:
                        upstream = self.start_upstream()
                    except NotAvailable as e:
                        for kind in self.servers_for(scenario):
                            rows.append({"section": section, "scenario": scenario, "server": kind,
                                         "workers": workers, "pinned": pinned, "status": "n/a",
                                         "reason": f"upstream: {e}"})
                        continue
                try:
                    for kind in self.servers_for(scenario):
                        rows.append(self.run_cell(section, scenario, kind, workers, pinned, runs))
                finally:
                    if upstream:
                        self.stop(upstream)
        return rows

    def slow_clients(self):
        rows = []
        log(f"== slow clients ({SLOW_CLIENTS} connections trickling headers; hello, 1 worker pinned)")
        a = self.args
        for kind in self.servers_for("slow-clients"):
            row = {"section": "slow clients", "scenario": "slow-clients", "server": kind, "workers": 1, "pinned": True,
                   "busy_before": self.wait_quiet()}
            try:
                procs, url = self.start_server(kind, "slow-clients", 1, True)
                port = urllib.parse.urlsplit(url).port
            except NotAvailable as e:
                row.update(status="n/a", reason=str(e))
                rows.append(row)
                log(f"  {kind:17} n/a ({e})")
                continue
            seconds = a.warmup + a.runs * a.duration + 4 + a.runs * 3
            slow = self.start("slowloris", ["taskset", "-c", LOAD_CPU, VENV / "bin/python", BENCH / "slowloris.py",
                                            "127.0.0.1", port, SLOW_CLIENTS, seconds])
            try:
                time.sleep(2.0)
                row.update(self.measure(url, True, "get", a.runs, procs,
                                        front=[procs[0].pid] if kind in PORCH_KINDS else None))
                row["status"] = "ok"
                slow.popen.wait(seconds + 30)
                try:
                    row["slow"] = json.loads(last_line(slow.output()))
                except ValueError:
                    row["slow"] = {"output": last_line(slow.output())}
                log(f"  {kind:17} {row['rps']:>10,.0f} req/s  p50 {fmt_ms(row['p50_ms'])}  p99 {fmt_ms(row['p99_ms'])}"
                    f"  errors {row['errors']}  slow: {row['slow']}")
            except Exception as e:
                row.update(status="n/a", reason=f"failed during load: {e}")
                log(f"  {kind:17} n/a ({row['reason']})")
            finally:
                self.stop(slow)
                for p in procs:
                    self.stop(p)
            rows.append(row)
        return rows

    def memory(self):
        rows = []
        log("== memory (Django JSON app; idle, then after load, unpinned)")
        seconds = max(1, min(self.args.duration, 5))
        for workers in (1, 2, 4):
            for kind in self.servers_for("memory"):
                row = {"section": "memory", "scenario": "memory", "server": kind, "workers": workers, "pinned": False}
                try:
                    procs, url = self.start_server(kind, "memory", workers, False)
                except NotAvailable as e:
                    row.update(status="n/a", reason=str(e))
                    rows.append(row)
                    continue
                try:
                    time.sleep(1.0)
                    idle = memory_of([p.pid for p in procs])
                    load = self.wrk(url, seconds, False, closes=kind == "uwsgi")
                    after = memory_of([p.pid for p in procs])
                    row.update(status="ok", idle_rss=idle["rss"], idle_pss=idle["pss"], rss=after["rss"],
                               pss=after["pss"], processes=after["processes"], rps=load["rps"], errors=load["errors"])
                    log(f"  {workers} w {kind:17} idle RSS {mib(idle['rss'])} PSS {mib(idle['pss'])}"
                        f"  after load RSS {mib(after['rss'])} PSS {mib(after['pss'])} ({after['processes']} processes)")
                except Exception as e:
                    row.update(status="n/a", reason=f"failed: {e}")
                finally:
                    for p in procs:
                        self.stop(p)
                rows.append(row)
        return rows

    def ceiling(self, scenarios):
        wanted = ceiling_apps(scenarios)
        wanted = [s for s in wanted if s != "django-db" or self.pg]
        if not wanted:
            return []
        log("== ceiling (apps called in a loop in one process, pinned to CPU 0)")
        seconds = max(1.0, float(self.args.duration))
        r = subprocess.run(["taskset", "-c", SERVER_CPU, VENV / "bin/python", BENCH / "ceiling.py", str(seconds), *wanted],
                           capture_output=True, text=True, env=self.py_env(), cwd=APPS, timeout=60 + 3 * seconds * len(wanted))
        if r.returncode != 0:
            log(f"  ceiling failed: {last_line(r.stderr)}")
            return [{"section": "ceiling", "scenario": s, "status": "n/a", "reason": last_line(r.stderr)} for s in wanted]
        rows = []
        for s, v in json.loads(r.stdout).items():
            rows.append({"section": "ceiling", "scenario": s, "status": "ok", "calls_per_s": v["cpu"] or v["wall"],
                         "calls_per_wall_s": v["wall"]})
            log(f"  {s:12} {v['cpu']:>10,.0f} calls per CPU-second ({v['wall']:,.0f} calls/s wall clock)")
        return rows


WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%d,"p99":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

NGINX_CONF = string.Template("""\
user $user;
worker_processes $workers;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log stderr warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
$upstream
$server
}
""")
NGINX_STATIC = string.Template("""\
    server {
$listen
        location /static/ { alias $dir/; }
    }""")
NGINX_UPSTREAM_SERVER = string.Template("""\
    server {
        listen 127.0.0.1:$port default_server;
        root $dir;
    }""")
NGINX_UPSTREAM_TCP = string.Template("""\
    upstream backend {
        server 127.0.0.1:$up;
        keepalive 64;
    }""")
NGINX_PROXY = string.Template("""\
    server {
$listen
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $$http_host;
            proxy_set_header X-Forwarded-For $$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $$scheme;
        }
    }""")


def nginx_listen(port, tls=None) -> str:
    """The `listen` lines of a server block: plain HTTP, or TLS with HTTP/2 by ALPN
    (nginx 1.22's `listen ... http2`; its default protocols leave TLS 1.3 out). An HTTP/2
    connection carries many more requests than an HTTP/1.1 one in a run, and h2load does not
    reconnect after the GOAWAY sent at `keepalive_requests`, so that limit is raised."""
    if not tls:
        return f"        listen 127.0.0.1:{port} default_server;"
    return (f"        listen 127.0.0.1:{port} ssl http2 default_server;\n"
            f"        ssl_certificate {tls[0]};\n"
            f"        ssl_certificate_key {tls[1]};\n"
            f"        ssl_protocols TLSv1.2 TLSv1.3;\n"
            f"        keepalive_requests 100000000;")


# Gunicorn's deployment documentation, "nginx Configuration".
NGINX_UPSTREAM_GUNICORN = string.Template("""\
    upstream app_server {
        server unix:$sock fail_timeout=0;
    }""")
NGINX_FRONT = string.Template("""\
    server {
$listen
        client_max_body_size 4G;
        keepalive_timeout 5;
        location / {
            proxy_set_header X-Forwarded-For $$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $$scheme;
            proxy_set_header Host $$http_host;
            proxy_redirect off;
            proxy_pass http://app_server;
        }
    }""")


def ceiling_apps(selected):
    """The apps whose ceiling is measured: those selected, or all when none is."""
    wsgi = [s for s in APP_SCENARIOS if not APP_SCENARIOS[s].get("asgi")]  # ceiling.py calls WSGI apps
    return [s for s in wsgi if s in selected] or wsgi


def expected_body(scenario, body: bytes) -> bool:
    scenario = H2_SCENARIOS.get(scenario, {}).get("base", scenario)
    if scenario in ("hello", "hello-browser", "slow-clients", "asgi-hello"):
        return body == b"Hello, World!"
    if scenario in WS_SCENARIOS:
        return body == b"ws echo"
    if scenario in ("django-json", "memory", "fastapi-json", "django-async-json"):
        return b'"message"' in body
    if scenario == "django-db":
        return b'"price"' in body
    if scenario == "upload":
        return body.strip().decode(errors="replace") == UPLOAD_SHA256
    if scenario in STATIC_SCENARIOS:
        return len(body) == STATIC_SCENARIOS[scenario]["size"]
    if scenario == "proxy":
        return len(body) == 1024
    return False


def summarize(samples, mem):
    def med(key):
        vals = [s[key] for s in samples if s[key] is not None]
        return statistics.median(vals) if vals else None

    return {
        "rps": med("rps"),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "errors": sum(s["errors"] for s in samples),
        "error_kinds": [s["error_kinds"] for s in samples if s["error_kinds"]],
        "requests": sum(s["requests"] for s in samples),
        "runs": samples,
        "rss": mem["rss"],
        "pss": mem["pss"],
        "processes": mem["processes"],
    }


# --- report ----------------------------------------------------------------------------


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fmt_ms(v):
    return "—" if v is None else f"{v:.2f} ms"


def mib(v):
    return "—" if v is None else f"{v / 1048576:.1f} MiB"


def fmt_rps(v):
    return "—" if v is None else f"{v:,.0f}"


def kib(v):
    return "—" if v is None else f"{v / 1024:.1f} KiB"


def fmt_share(v):
    return "—" if v is None else f"{100 * v:.0f} %"


def porch_rps(rows, section, scenario, workers=None):
    for r in rows:
        if (r.get("section") == section and r.get("scenario") == scenario and r.get("server") == "porch"
                and r.get("status") == "ok" and (workers is None or r.get("workers") == workers)):
            return r["rps"]
    return None


def md_escape(text):
    return " ".join(str(text).replace("|", "\\|").split())


def pct(v, whole):
    return f"{100 * v / whole:.0f} %"


def ratio(p, other):
    if p is None or not other:
        return "—"
    return f"{p / other:.2f}×"


def title(scenario):
    if scenario in APP_SCENARIOS:
        return APP_SCENARIOS[scenario]["title"]
    if scenario in STATIC_SCENARIOS:
        return STATIC_SCENARIOS[scenario]["title"]
    if scenario in H2_SCENARIOS:
        return H2_SCENARIOS[scenario]["title"]
    return {"proxy": "proxy to nginx (1 KiB file)", "slow-clients": f"hello + {SLOW_CLIENTS} slow clients"}.get(scenario, scenario)


def fmt_cpu(r):
    """CPU time per request of the whole server, and of its front where it has one."""
    if r.get("cpu_us") is None:
        return "—"
    out = f"{r['cpu_us']:.1f} µs"
    if r.get("front_cpu_us") is not None:
        out += f" (front {r['front_cpu_us']:.1f})"
    return out


def server_rps(rows, section, scenario, server):
    for r in rows:
        if (r.get("section") == section and r.get("scenario") == scenario and r.get("server") == server
                and r.get("status") == "ok"):
            return r["rps"]
    return None


def markdown(meta, rows) -> str:
    out = [f"# porch benchmark, {meta['date']}", ""]
    out.append(f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, Linux {meta['machine']['kernel']}.  ")
    out.append(f"Method: wrk -t1 -c{CONNECTIONS} (static 10 MiB: -c{STATIC_SCENARIOS['static-10m']['connections']}); "
               f"TLS + HTTP/2 rows: h2load -t1 -c{H2_CLIENTS} -m{H2_STREAMS} offering {H2_TLS13_CIPHER}; "
               f"{meta['warmup']} s warm-up, then {meta['runs']} × {meta['duration']} s (median) for 1 worker"
               + (f"; {meta.get('reference_workers', 2)} workers: one run, unpinned.  "
                  if any(r.get("section") not in ("1 worker", "slow clients", "memory", "ceiling", "websocket",
                                                  "websocket idle") for r in rows)
                  else ".  "))
    out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    if meta.get("busy_cells"):
        out.append("")
        out.append(f"**Warning: other work was running on the machine during this run**: {meta['busy_cells']} cells "
                   f"started while other processes kept the CPUs over {BUSY_FRACTION:.0%} busy (up to "
                   f"{meta['busy_max_before_cell']:.0%}), marked †; their numbers are low and noisy.")
    out.append("")
    ceiling = {r["scenario"]: r for r in rows if r.get("section") == "ceiling" and r.get("status") == "ok"}

    throughput_sections = []
    for r in rows:
        s = r.get("section")
        if s not in throughput_sections and s not in ("slow clients", "memory", "ceiling", "websocket",
                                                      "websocket idle"):
            throughput_sections.append(s)
    for section in throughput_sections + ["slow clients"]:
        sect = [r for r in rows if r.get("section") == section]
        if not sect:
            continue
        if section == "1 worker":
            head = "## 1 worker (server on CPU 0, load generator on CPU 1)"
        elif section == "slow clients":
            head = f"## Normal load while {SLOW_CLIENTS} slow clients trickle headers (hello, 1 worker pinned)"
        else:
            head = f"## {section} (unpinned, all cores shared with the load generator)"
        out += [head, ""]
        out.append("| scenario | server | req/s | p50 | p99 | errors | RSS | PSS | CPU per request | porch ÷ this |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in sect:
            label = SERVER_LABELS.get(r["server"], r["server"])
            if (r.get("busy_before") or 0) > BUSY_FRACTION:
                label += " †"
            if r.get("status") != "ok":
                out.append(f"| {title(r['scenario'])} | {label} | n/a ({md_escape(r.get('reason', ''))}) | | | | | | | |")
                continue
            p = porch_rps(rows, section, r["scenario"])
            rat = "1.00×" if r["server"] == "porch" else ratio(p, r["rps"])
            # wrk counts no error for a connection that never got an answer; say so.
            errors = r["errors"] if r.get("requests", 1) else "no answer"
            out.append(f"| {title(r['scenario'])} | {label} | {fmt_rps(r['rps'])} | {fmt_ms(r['p50_ms'])} | "
                       f"{fmt_ms(r['p99_ms'])} | {errors} | {mib(r['rss'])} | {mib(r['pss'])} | {fmt_cpu(r)} | {rat} |")
        if section == "slow clients":
            out.append("")
            for r in sect:
                if r.get("slow"):
                    out.append(f"- {SERVER_LABELS.get(r['server'], r['server'])}: slow clients {r['slow']}")
        tls = sorted({r["tls"] for r in sect if r.get("tls")})
        if tls:
            out.append("")
            out.append(f"TLS + HTTP/2 rows negotiated: {', '.join(tls)}.")
        out.append("")

    targets = []
    for section in throughput_sections:
        for scenario, variant, peer, goal, *only in TARGETS:
            if only and only[0] != section:
                continue
            p, o = server_rps(rows, section, scenario, variant), server_rps(rows, section, scenario, peer)
            if p is not None and o is not None:
                met = "yes" if p / o >= goal else "no"
                targets.append(f"| {section} | {title(scenario)} | {SERVER_LABELS[variant]} | {SERVER_LABELS[peer]} | "
                               f"{ratio(p, o)} | ≥ {goal:g}× | {met} |")
    # Memory: PSS per worker after load, porch at most Gunicorn's (lower is better).
    mem_ok = {(r["workers"], r["server"]): r["pss"] / r["workers"] for r in rows
              if r.get("section") == "memory" and r.get("status") == "ok"}
    for workers in sorted({w for w, _ in mem_ok}):
        p, o = mem_ok.get((workers, "porch")), mem_ok.get((workers, "gunicorn-sync"))
        if p is not None and o is not None:
            targets.append(f"| memory, {workers} worker{'s' if workers > 1 else ''} | PSS per worker after load | {SERVER_LABELS['porch']} | "
                           f"{SERVER_LABELS['gunicorn-sync']} | {p / o:.2f}× | ≤ 1× | {'yes' if p <= o else 'no'} |")
    if targets:
        out += ["## Against the goals (porch ÷ peer: req/s, or PSS per worker for memory)", ""]
        out.append("| section | scenario | porch | peer | porch ÷ peer | goal | met |")
        out.append("|---|---|---|---|---:|---:|---|")
        out += targets
        out.append("")

    fronts = [r for r in rows if r.get("server") in PORCH_KINDS and r.get("status") == "ok"
              and r.get("front_cpu_us")]
    if fronts:
        out += ["## porch's front process: CPU time per request", ""]
        out.append("The front (the `porch` process itself: listeners, TLS, HTTP, static files, dispatch; "
                   "not the workers) over the measured runs, from its utime + stime in `/proc/PID/stat`. "
                   "Requests per front CPU-second = 10⁶ ÷ µs: the most one core of front can carry; "
                   "the front runs on as many cores as it has runtime threads.")
        out.append("")
        out.append("| section | scenario | server | req/s | front CPU per request | requests per front CPU-second | "
                   "whole server CPU per request | front share |")
        out.append("|---|---|---|---:|---:|---:|---:|---:|")
        for r in fronts:
            share = pct(r["front_cpu_us"], r["cpu_us"]) if r.get("cpu_us") else "—"
            out.append(f"| {r['section']} | {title(r['scenario'])} | {SERVER_LABELS.get(r['server'], r['server'])} | "
                       f"{fmt_rps(r['rps'])} | {r['front_cpu_us']:.1f} µs | {1e6 / r['front_cpu_us']:,.0f} | "
                       f"{r['cpu_us']:.1f} µs | {share} |")
        out.append("")

    mem = [r for r in rows if r.get("section") == "memory"]
    if mem:
        out += ["## Memory (Django JSON app, whole process tree, idle and after load)", ""]
        out.append("| workers | server | idle RSS | idle PSS | after-load RSS | after-load PSS | PSS per worker | processes |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in mem:
            label = SERVER_LABELS.get(r["server"], r["server"])
            if r.get("status") != "ok":
                out.append(f"| {r['workers']} | {label} | n/a ({md_escape(r.get('reason', ''))}) | | | | | |")
                continue
            out.append(f"| {r['workers']} | {label} | {mib(r['idle_rss'])} | {mib(r['idle_pss'])} | {mib(r['rss'])} | "
                       f"{mib(r['pss'])} | {mib(r['pss'] / r['workers'])} | {r['processes']} |")
        out.append("")

    ws = [r for r in rows if r.get("section") == "websocket"]
    if ws:
        out += [f"## WebSocket echo (1 worker on CPU {SERVER_CPU}, client on CPU {LOAD_CPU})", ""]
        out.append(f"`bench/apps/ws_echo.py` (raw ASGI: accept, send each message back); `bench/wsload.py` "
                   f"(picows on uvloop, one process) keeps {WS_CONNECTIONS} sockets each sending a "
                   f"{WS_MESSAGE}-byte text message and waiting for its echo before the next. messages/s = round "
                   f"trips per second; latency = one round trip. client CPU = the load generator's own CPU time "
                   f"over the run ÷ its length (near 100 %: the client, not the server, set the pace). CPU per "
                   f"message = user + system time of the server's whole process tree over the runs ÷ round trips "
                   f"(porch's front process in brackets). The `picows` row is a bare picows echo listener, no "
                   f"ASGI and no app: what the client reaches against a server that costs next to nothing.")
        out.append("")
        out.append("| server | messages/s | p50 | p99 | errors | RSS | PSS | CPU per message | client CPU | porch ÷ this |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        p = porch_rps(rows, "websocket", "ws-echo")
        for r in ws:
            label = SERVER_LABELS.get(r["server"], r["server"])
            if (r.get("busy_before") or 0) > BUSY_FRACTION:
                label += " †"
            if r.get("status") != "ok":
                out.append(f"| {label} | n/a ({md_escape(r.get('reason', ''))}) | | | | | | | | |")
                continue
            rat = "1.00×" if r["server"] == "porch" else ratio(p, r["rps"])
            errors = str(r["errors"])
            if r.get("first_error"):
                errors += f" ({md_escape(r['first_error'])})"
            out.append(f"| {label} | {fmt_rps(r['rps'])} | {fmt_ms(r['p50_ms'])} | {fmt_ms(r['p99_ms'])} | "
                       f"{errors} | {mib(r['rss'])} | {mib(r['pss'])} | {fmt_cpu(r)} | "
                       f"{fmt_share(r.get('client_cpu'))} | {rat} |")
        out.append("")

    wsi = [r for r in rows if r.get("section") == "websocket idle"]
    if wsi:
        out += [f"## WebSocket: {WS_IDLE_SOCKETS:,} idle sockets (1 worker on CPU {SERVER_CPU})", ""]
        out.append(f"The server's whole process tree 1 s after start (one WebSocket round trip done), then with "
                   f"{WS_IDLE_SOCKETS:,} sockets open and silent (`bench/wsload.py hold`, on CPU {LOAD_CPU}); per "
                   f"socket = the difference ÷ the sockets open. Kernel socket buffers are not in RSS.")
        out.append("")
        out.append("| server | sockets open (at end) | errors | RSS before | RSS with sockets | RSS per socket | "
                   "PSS before | PSS with sockets | PSS per socket |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in wsi:
            label = SERVER_LABELS.get(r["server"], r["server"])
            if r.get("status") != "ok":
                out.append(f"| {label} | n/a ({md_escape(r.get('reason', ''))}) | | | | | | | |")
                continue
            errors = str(r["errors"])
            if r.get("first_error"):
                errors += f" ({md_escape(r['first_error'])})"
            out.append(f"| {label} | {r['open']:,} ({r['open_at_end']:,}) | {errors} | {mib(r['idle_rss'])} | "
                       f"{mib(r['rss'])} | {kib(r.get('rss_per_socket'))} | {mib(r['idle_pss'])} | {mib(r['pss'])} | "
                       f"{kib(r.get('pss_per_socket'))} |")
        out.append("")

    if ceiling:
        out += ["## Ceiling: the app called in a loop in one process, no HTTP (one core)", ""]
        out.append("| scenario | calls per CPU-second | calls/s (wall clock) | porch req/s (1 worker) | "
                   "porch % of ceiling | best peer | best peer % |")
        out.append("|---|---:|---:|---:|---:|---|---:|")
        for s, c in ceiling.items():
            cps = c["calls_per_s"]
            p = porch_rps(rows, "1 worker", s)
            peers = [r for r in rows if r.get("section") == "1 worker" and r.get("scenario") == s
                     and r.get("status") == "ok" and r["server"] not in PORCH_KINDS]
            best = max(peers, key=lambda r: r["rps"], default=None)
            out.append(f"| {title(s)} | {cps:,.0f} | {c['calls_per_wall_s']:,.0f} | {fmt_rps(p)} | {'—' if p is None else pct(p, cps)} | "
                       f"{SERVER_LABELS[best['server']] if best else '—'} | "
                       f"{pct(best['rps'], cps) if best else '—'} |")
        out.append("")

    out += ["Settings:", ""]
    used = {r.get("server") for r in rows}
    for k, v in SERVER_SETTINGS.items():
        if k in used:
            out.append(f"- {SERVER_LABELS[k]}: {v}")
    out.append(f"- PostgreSQL 15 (fsync off, max_connections 100) on CPU 1 with the load generator; "
               f"Django `CONN_MAX_AGE = 60`, "
               f"DEBUG off, startproject's middleware; the proxy upstream is nginx on CPU 1.")
    out.append("- errors = wrk's connect/read/write/timeout errors plus non-2xx/3xx answers, summed over the runs "
               "(for uWSGI read errors are left out: its http-socket closes every connection after the response "
               "without `Connection: close`, which wrk counts as a read error); for h2load, the requests it "
               "counts as failed (4xx/5xx, reset streams, timeouts); "
               "memory columns = the server's whole process tree after the load.")
    out.append("- CPU per request = user + system time of the server's whole process tree over the measured runs "
               "(`/proc/PID/stat`), divided by the requests answered; in brackets the front's share: porch's "
               "own process without its workers, nginx's processes in nginx → Gunicorn.")
    out.append(f"- TLS + HTTP/2: a self-signed ECDSA P-256 certificate made at run time; h2load offers only "
               f"{H2_TLS13_CIPHER} for TLS 1.3 and HTTP/2 only by ALPN; the peers' TLS rows say what was negotiated.")
    out.append("")
    return "\n".join(out)


def versions(selected=()):
    def run(cmd):
        try:
            r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=20)
            return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "missing"

    py = VENV / "bin/python"
    v = {}
    v["porch"] = run([PORCH, "--version"]).replace("porch ", "") if PORCH.exists() else "not built"
    commit = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    if commit not in ("?", "missing") and not commit.startswith("fatal"):
        v["porch"] += f" (commit {commit})"
    v["Granian"] = run([VENV / "bin/granian", "--version"]).split()[-1]
    v["Gunicorn"] = run([py, "-c", "import gunicorn; print(gunicorn.__version__)"])
    v["uWSGI"] = run([VENV / "bin/uwsgi", "--version"])
    v["nginx"] = run(["nginx", "-v"]).split("/")[-1]
    v["wrk"] = run(["wrk", "-v"]).split()[1] if run(["wrk", "-v"]).startswith("wrk") else "?"
    v["h2load"] = run(["h2load", "--version"]).split("/")[-1]
    v["OpenSSL"] = run(["openssl", "version"]).split()[1] if run(["openssl", "version"]).startswith("OpenSSL") else "?"
    v["Django"] = run([py, "-c", "import django; print(django.get_version())"])
    if any(s in WS_SCENARIOS or s == "asgi-hello" for s in selected):
        for name, mod in (("Uvicorn", "uvicorn"), ("Hypercorn", "hypercorn"), ("Daphne", "daphne"),
                          ("websockets", "websockets"), ("picows", "picows")):
            v[name] = run([py, "-c", f"import importlib.metadata as m; print(m.version({mod!r}))"])
    v["CPython"] = platform.python_version()
    m = re.search(r"\d+\.\d+", run([PG_BIN / "postgres", "--version"]))
    v["PostgreSQL"] = m.group(0) if m else "?"
    return v


def machine():
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: 1 s per run, 1 run, short warm-up")
    p.add_argument("--duration", type=int, default=10.0, help="seconds per measured run (default 10)")
    p.add_argument("--runs", type=int, default=3, help="measured runs per 1-worker cell; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up load before the runs")
    p.add_argument("--only", default="", help=f"comma-separated scenarios (or prefixes): {', '.join(SCENARIOS)}")
    p.add_argument("--servers", default="", help="comma-separated servers: "
                   f"{', '.join(dict.fromkeys(APP_SERVERS + ['nginx'] + WS_SERVERS))}")
    p.add_argument("--no-reference", action="store_true", help="skip the all-cores unpinned runs")
    p.add_argument("--reference-workers", type=int, default=os.cpu_count() or 2,
                   help="workers (and nginx worker processes) in the unpinned runs (default: one per CPU, "
                        f"{os.cpu_count()} here)")
    p.add_argument("--wait-quiet", type=float, default=30.0,
                   help="before each cell, wait up to this many seconds for other work to leave the CPUs idle "
                        "(default 30; cells started on a busy machine are flagged)")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temporary directory (logs, configs)")
    p.add_argument("--out", default="", help="directory for the .md and .json (default bench/results, "
                                              "bench/results/tmp for --quick)")
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.runs, a.warmup = 1, 1, 1
    # wrk takes whole seconds.
    a.duration = max(1, round(a.duration))
    a.warmup = max(1, round(a.warmup))
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    selected = [s for s in SCENARIOS if not only or any(s == o or s.startswith(o) for o in only)]
    unknown = [o for o in only if not any(s == o or s.startswith(o) for s in SCENARIOS)]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    a.only = only
    a.selected = selected
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    bad = [s for s in a.servers if s not in APP_SERVERS + WS_SERVERS + ["nginx"]]
    if bad:
        p.error(f"unknown server(s): {', '.join(bad)}")
    return a


def main(argv):
    args = parse_args(argv)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    # TERM (and INT, also when started in the background where INT is ignored) stops the
    # run cleanly: servers stopped, temporary directory removed, partial table written.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    if os.cpu_count() and os.cpu_count() < 2:
        log("warning: fewer than 2 CPUs; pinning to CPU 1 will fail")
    # The servers started here inherit this: ws-idle holds a thousand sockets open.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    bench = Bench(args)
    tools = versions(args.selected)  # before the run: the porch binary and commit that were measured
    rows = []
    started = datetime.datetime.now()
    try:
        sel = args.selected
        if "django-db" in sel or ("ceiling" in sel and "django-db" in ceiling_apps(sel)):
            bench.start_postgres()
        throughput = [s for s in sel if s in APP_SCENARIOS or s in STATIC_SCENARIOS or s in H2_SCENARIOS
                      or s == "proxy"]
        if throughput:
            rows += bench.throughput(throughput)
        if "slow-clients" in sel:
            rows += bench.slow_clients()
        if "memory" in sel:
            rows += bench.memory()
        if "ceiling" in sel:
            rows += bench.ceiling(sel)
        if "ws-echo" in sel:
            rows += bench.ws_echo()
        if "ws-idle" in sel:
            rows += bench.ws_idle()
    except KeyboardInterrupt:
        log("interrupted; writing what was measured")
    finally:
        bench.close()

    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "versions": tools,
        "duration": args.duration,
        "runs": args.runs,
        "warmup": args.warmup,
        "connections": CONNECTIONS,
        "h2": {"clients": H2_CLIENTS, "streams": H2_STREAMS, "tls13_cipher": H2_TLS13_CIPHER},
        "ws": {"connections": WS_CONNECTIONS, "message_bytes": WS_MESSAGE, "idle_sockets": WS_IDLE_SOCKETS},
        "reference_workers": args.reference_workers,
        "quick": args.quick,
        "argv": argv,
        "settings": {k: SERVER_SETTINGS[k] for k in SERVER_SETTINGS},
    }
    busy = [r["busy_before"] for r in rows if r.get("busy_before") is not None]
    meta["busy_max_before_cell"] = max(busy, default=None)
    meta["busy_cells"] = sum(1 for b in busy if b > BUSY_FRACTION)
    md = markdown(meta, rows)
    out_dir = Path(args.out) if args.out else (RESULTS / "tmp" if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y-%m-%d-%H%M%S")
    (out_dir / f"{stem}.md").write_text(md)
    (out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(md)
    log(f"saved {out_dir / stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
