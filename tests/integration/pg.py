"""A throwaway PostgreSQL 15 server for tests: a fresh cluster in a temporary directory,
listening on a free loopback port (and a unix socket inside that directory), run as a
non-root user because PostgreSQL refuses to run as root.

    with PostgresServer() as pg:
        pg.create_database("app")
        url = pg.url("app")          # postgresql://postgres@127.0.0.1:PORT/app

or the ``postgres`` fixture (one server per test module).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
# The unprivileged account the server runs as when the tests run as root.
PG_USER = os.environ.get("PG_TEST_USER", "nobody")


class PostgresServer:
    def __init__(self, *, timeout: float = 60.0):
        if not (PG_BIN / "initdb").exists():
            pytest.fail(f"PostgreSQL 15 is not installed ({PG_BIN}/initdb is missing)")
        self.timeout = timeout
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="porch-pg-"))
        self.data = self.dir / "data"
        self.socket_dir = self.dir / "sock"
        self.logfile = self.dir / "postgres.log"
        self.proc: subprocess.Popen | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam(PG_USER)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self._as_user = [
                "setpriv",
                f"--reuid={account.pw_uid}",
                f"--regid={account.pw_gid}",
                "--clear-groups",
                "--",
            ]
        # Let other local users (the app under test) reach the socket directory.
        os.chmod(self.dir, 0o755)

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "HOME": str(self.dir)}
        return subprocess.run(
            [*self._as_user, *cmd], env=env, capture_output=True, text=True, timeout=self.timeout
        )

    def start(self) -> "PostgresServer":
        r = self._run("mkdir", "-p", str(self.socket_dir))
        if r.returncode != 0:
            raise RuntimeError(f"cannot create {self.socket_dir}: {r.stderr}")
        r = self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{r.stdout}\n{r.stderr}")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
        log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [
                *self._as_user, str(PG_BIN / "postgres"), "-D", str(self.data),
                "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.socket_dir),
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=100",
            ],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log()}")
            r = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-t", "1"],
                capture_output=True,
            )
            if r.returncode == 0:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"postgres did not accept connections:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kw):
        import psycopg

        return psycopg.connect(self.url(dbname), connect_timeout=5, **kw)

    def create_database(self, name: str) -> str:
        with self.connect(autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected, no waiting.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="module")
def postgres():
    """A running throwaway PostgreSQL 15 server, stopped and deleted after the module."""
    with PostgresServer() as pg:
        yield pg
