"""End to end: the reference Django deployment (examples/django) on porch and PostgreSQL 15.

The same entrypoint script the container image runs (wait for the database, migrate, exec
porch) is started here against a throwaway PostgreSQL server, and everything is checked over
real HTTP: the REST API with its errors, the admin with its hashed static files, concurrent
writes counted through the API and in the database, and a graceful stop.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
import requests

from conftest import PORCH_BIN, ROOT, free_port, raw_request, wait_for_port
from pg import postgres  # noqa: F401  (fixture)

EXAMPLE = ROOT / "examples" / "django"
ENTRYPOINT = EXAMPLE / "entrypoint.sh"
ADMIN_USER, ADMIN_PASSWORD = "admin", "porch-e2e-Secret-42"
ONE_YEAR = 365 * 24 * 3600


class Deployment:
    """The entrypoint script running porch with the bookstore app."""

    def __init__(self, database_url: str | None, static_root: Path, workdir: Path):
        self.port = free_port()
        self.admin_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.database_url = database_url
        self.static_root = static_root
        self.env = dict(os.environ)
        self.env.pop("PORCH_CMD_ARGS", None)
        self.env.update(
            {
                "VIRTUAL_ENV": sys.prefix,
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "PYTHONDONTWRITEBYTECODE": "1",
                "DATABASE_URL": database_url,
                "SECRET_KEY": "e2e-" + "x" * 60,
                "DEBUG": "0",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "STATIC_ROOT": str(static_root),
                "PORCH_BIN": str(PORCH_BIN),
                "PORCH_BIND": f"127.0.0.1:{self.port}",
                "PORCH_ADMIN_BIND": f"127.0.0.1:{self.admin_port}",
                "PORCH_WORKERS": "2",
                "DB_WAIT_SECONDS": "30",
            }
        )
        if database_url is None:  # SQLite, as scripts/demo runs it
            del self.env["DATABASE_URL"]
            self.env["SQLITE_PATH"] = str(workdir / "db.sqlite3")
        self.logfile = workdir / "entrypoint.log"
        self.proc: subprocess.Popen | None = None

    def manage(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=EXAMPLE,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, f"manage.py {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
        return r

    def start(self) -> None:
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(
                [str(ENTRYPOINT)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, self.proc, timeout=120)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(self.admin_url + "/healthz", timeout=2).status_code == 200:
                        return
                except requests.RequestException:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("porch's /healthz never answered 200")
                time.sleep(0.1)
        except Exception as exc:
            self.kill()
            raise RuntimeError(f"the deployment did not start ({exc}):\n{self.log()}") from None

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """Stop everything the entrypoint started (porch and its workers), whatever state."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in its process group
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)


@pytest.fixture(scope="module")
def site(postgres):  # noqa: F811
    database_url = postgres.create_database("bookstore")
    with tempfile.TemporaryDirectory(prefix="porch-django-") as tmp:
        tmp = Path(tmp)
        dep = Deployment(database_url, tmp / "staticfiles", tmp)
        dep.manage("collectstatic", "--noinput")
        try:
            dep.start()
            dep.manage(
                "createsuperuser",
                "--noinput",
                env={
                    "DJANGO_SUPERUSER_USERNAME": ADMIN_USER,
                    "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
                    "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
                },
            )
            yield dep
        finally:
            dep.kill()


@pytest.fixture
def http():
    with requests.Session() as s:
        yield s


def api(site, path: str) -> str:
    return f"{site.url}/api/{path}"


def create_author(http, site, name: str) -> dict:
    r = http.post(api(site, "authors/"), json={"name": name}, timeout=10)
    assert r.status_code == 201, (r.status_code, r.text)
    return r.json()


# --- health and routing ---------------------------------------------------------------


def test_health_endpoint_on_admin_listener(site, http):
    r = http.get(site.admin_url + "/healthz", timeout=5)
    assert r.status_code == 200
    assert r.text.strip() == "ok"
    # The admin listener is separate: the app's port does not answer /healthz itself.
    assert http.get(site.url + "/healthz", timeout=5).status_code == 404


def test_root_redirects_to_api_root(site, http):
    r = http.get(site.url + "/", allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"] == "/api/"
    r = http.get(api(site, ""), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "authors": f"{site.url}/api/authors/",
        "books": f"{site.url}/api/books/",
    }


def test_unknown_host_is_rejected(site, http):
    r = http.get(api(site, ""), headers={"Host": "evil.example"}, timeout=10)
    assert r.status_code == 400


# --- REST operations ------------------------------------------------------------------


def test_author_and_book_lifecycle(site, http):
    author = create_author(http, site, "Ursula K. Le Guin")
    assert author["name"] == "Ursula K. Le Guin" and author["id"] > 0
    aid = author["id"]

    r = http.post(
        api(site, "books/"),
        json={"title": "The Dispossessed", "author": aid, "isbn": "9780061054884", "pages": 387,
              "published": "1974-05-01"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    book = r.json()
    bid = book["id"]
    assert book["author"] == aid and book["author_name"] == "Ursula K. Le Guin"
    assert r.headers.get("Location") in (None, f"{site.url}/api/books/{bid}/")

    r = http.get(api(site, f"books/{bid}/"), timeout=10)
    assert r.status_code == 200
    assert r.json()["title"] == "The Dispossessed" and r.json()["published"] == "1974-05-01"

    # PUT replaces the whole record.
    r = http.put(
        api(site, f"books/{bid}/"),
        json={"title": "The Dispossessed: An Ambiguous Utopia", "author": aid, "pages": 400},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["title"] == "The Dispossessed: An Ambiguous Utopia"
    assert r.json()["pages"] == 400
    # PATCH changes only what it names.
    r = http.patch(api(site, f"books/{bid}/"), json={"pages": 401}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["pages"] == 401
    assert r.json()["title"] == "The Dispossessed: An Ambiguous Utopia"

    r = http.get(api(site, f"authors/{aid}/"), timeout=10)
    assert r.status_code == 200 and r.json()["book_count"] == 1
    r = http.patch(api(site, f"authors/{aid}/"), json={"born": "1929-10-21"}, timeout=10)
    assert r.status_code == 200 and r.json()["born"] == "1929-10-21"

    r = http.delete(api(site, f"books/{bid}/"), timeout=10)
    assert r.status_code == 204 and r.content == b""
    assert http.get(api(site, f"books/{bid}/"), timeout=10).status_code == 404
    assert http.delete(api(site, f"books/{bid}/"), timeout=10).status_code == 404

    # Deleting an author deletes their books.
    r = http.post(api(site, "books/"), json={"title": "Lathe of Heaven", "author": aid}, timeout=10)
    assert r.status_code == 201
    other = r.json()["id"]
    assert http.delete(api(site, f"authors/{aid}/"), timeout=10).status_code == 204
    assert http.get(api(site, f"authors/{aid}/"), timeout=10).status_code == 404
    assert http.get(api(site, f"books/{other}/"), timeout=10).status_code == 404


def test_validation_errors_are_400_with_field_messages(site, http):
    aid = create_author(http, site, "Validation Author")["id"]

    r = http.post(api(site, "authors/"), json={}, timeout=10)
    assert r.status_code == 400
    assert r.json() == {"name": ["This field is required."]}

    r = http.post(api(site, "authors/"), json={"name": "   "}, timeout=10)
    assert r.status_code == 400 and "name" in r.json()

    r = http.post(api(site, "books/"), json={"title": "", "author": 99999999, "pages": 0,
                                             "isbn": "12-34", "published": "not a date"},
                  timeout=10)
    assert r.status_code == 400
    errors = r.json()
    assert set(errors) == {"title", "author", "pages", "isbn", "published"}, errors
    assert errors["title"] == ["This field may not be blank."]
    assert "does not exist" in errors["author"][0]
    assert errors["isbn"] == ["An ISBN has exactly 13 digits."]

    r = http.post(api(site, "books/"), json={"title": "First", "author": aid,
                                             "isbn": "9780000000001"}, timeout=10)
    assert r.status_code == 201
    r = http.post(api(site, "books/"), json={"title": "Second", "author": aid,
                                             "isbn": "9780000000001"}, timeout=10)
    assert r.status_code == 400
    assert "already exists" in r.json()["isbn"][0]

    # A PATCH that breaks a rule is refused and changes nothing.
    bid = http.get(api(site, f"books/?author={aid}"), timeout=10).json()["results"][0]["id"]
    r = http.patch(api(site, f"books/{bid}/"), json={"pages": -3}, timeout=10)
    assert r.status_code == 400 and "pages" in r.json()
    assert http.get(api(site, f"books/{bid}/"), timeout=10).json()["pages"] is None

    # A body that is not JSON, and a filter that is not an id.
    r = http.post(api(site, "books/"), data=b"{not json", headers={"Content-Type": "application/json"},
                  timeout=10)
    assert r.status_code == 400 and "JSON parse error" in r.json()["detail"]
    r = http.get(api(site, "books/?author=abc"), timeout=10)
    assert r.status_code == 400 and "author" in r.json()


def test_not_found(site, http):
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        r = http.request(method, api(site, "books/987654321/"), json={"title": "x"}, timeout=10)
        assert r.status_code == 404, (method, r.status_code)
        assert r.json() == {"detail": "No Book matches the given query."}
    assert http.get(api(site, "authors/987654321/"), timeout=10).status_code == 404
    assert http.get(api(site, "publishers/"), timeout=10).status_code == 404
    assert http.get(api(site, "books/?page=9999"), timeout=10).status_code == 404


def test_list_pagination_and_filters(site, http):
    aid = create_author(http, site, "Prolific Writer")["id"]
    other = create_author(http, site, "Someone Else")["id"]
    for i in range(45):
        title = f"Volume {i:02d}" + (" of the Dragon" if i % 10 == 0 else "")
        r = http.post(api(site, "books/"), json={"title": title, "author": aid}, timeout=10)
        assert r.status_code == 201, r.text
    assert http.post(api(site, "books/"), json={"title": "Dragon Elsewhere", "author": other},
                     timeout=10).status_code == 201

    r = http.get(api(site, f"books/?author={aid}"), timeout=10)
    assert r.status_code == 200
    page1 = r.json()
    assert page1["count"] == 45
    assert len(page1["results"]) == 20
    assert page1["previous"] is None
    assert page1["next"] == f"{site.url}/api/books/?author={aid}&page=2"
    assert all(b["author"] == aid for b in page1["results"])

    page2 = http.get(page1["next"], timeout=10).json()
    page3 = http.get(page2["next"], timeout=10).json()
    assert len(page2["results"]) == 20 and len(page3["results"]) == 5 and page3["next"] is None
    titles = [b["title"] for p in (page1, page2, page3) for b in p["results"]]
    assert len(set(titles)) == 45

    r = http.get(api(site, f"books/?author={aid}&search=dragon"), timeout=10)
    assert [b["title"] for b in r.json()["results"]] == [
        "Volume 00 of the Dragon", "Volume 10 of the Dragon", "Volume 20 of the Dragon",
        "Volume 30 of the Dragon", "Volume 40 of the Dragon",
    ]
    r = http.get(api(site, "books/?search=DRAGON"), timeout=10)
    assert r.json()["count"] == 6

    r = http.get(api(site, "authors/?search=prolific"), timeout=10)
    assert [(a["id"], a["book_count"]) for a in r.json()["results"]] == [(aid, 45)]


# --- admin and static files -----------------------------------------------------------


def test_admin_login_page_and_hashed_static_files(site, http):
    r = http.get(site.url + "/admin/", allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"] == "/admin/login/?next=/admin/"

    r = http.get(site.url + "/admin/login/", timeout=10)
    assert r.status_code == 200
    assert "text/html" in r.headers["Content-Type"]
    css = re.findall(r'href="(/static/admin/css/[\w.-]+\.[0-9a-f]{12}\.css)"', r.text)
    assert css, "the login page links no hashed admin stylesheet:\n" + r.text[:2000]

    path = css[0]
    r = http.get(site.url + path, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/css")
    on_disk = (site.static_root / path.removeprefix("/static/")).read_bytes()
    assert r.content == on_disk
    cache = r.headers.get("Cache-Control", "")
    max_age = re.search(r"max-age=(\d+)", cache)
    assert max_age and int(max_age.group(1)) >= ONE_YEAR, cache
    assert "immutable" in cache, cache
    # A revalidation with the validator porch sent costs no body.
    etag = r.headers.get("ETag")
    assert etag, r.headers
    r = http.get(site.url + path, headers={"If-None-Match": etag}, timeout=10)
    assert r.status_code == 304 and r.content == b""

    # The unhashed original may change on the next deploy: it must not be cached for good.
    plain = re.sub(r"\.[0-9a-f]{12}\.css$", ".css", path)
    r = http.get(site.url + plain, timeout=10)
    assert r.status_code == 200
    assert "immutable" not in r.headers.get("Cache-Control", "")

    assert http.get(site.url + "/static/admin/css/no-such-file.css", timeout=10).status_code == 404
    # Sent as raw bytes: HTTP client libraries would remove the dot segments themselves.
    for target in ("/static/../manage.py", "/static/%2e%2e/manage.py", "/static/..%2fmanage.py"):
        reply = raw_request(
            site.port, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        status = reply.split(b"\r\n", 1)[0]
        assert re.match(rb"HTTP/1\.1 4\d\d ", status), (target, status)
        assert b"DJANGO_SETTINGS_MODULE" not in reply, target


def test_admin_login_and_pages(site, http):
    r = http.get(site.url + "/admin/login/", timeout=10)
    token = http.cookies["csrftoken"]
    r = http.post(
        site.url + "/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": token, "username": ADMIN_USER, "password": ADMIN_PASSWORD,
              "next": "/admin/"},
        headers={"Referer": site.url + "/admin/login/"},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302, r.text[:2000]
    assert r.headers["Location"] == "/admin/"
    r = http.get(site.url + "/admin/", timeout=10)
    assert r.status_code == 200 and "Site administration" in r.text
    r = http.get(site.url + "/admin/catalog/book/", timeout=10)
    assert r.status_code == 200 and "Select book to change" in r.text


# --- concurrency ----------------------------------------------------------------------


def test_concurrent_clients_create_exactly_1600_books(site, postgres):  # noqa: F811
    with requests.Session() as s:
        aid = create_author(s, site, "Concurrent Author")["id"]
    clients, per_client = 8, 200
    failures: list[str] = []
    created: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        ids = []
        with requests.Session() as s:
            for i in range(per_client):
                try:
                    r = s.post(api(site, "books/"), json={"title": f"c{n}-{i}", "author": aid},
                               timeout=60)
                except requests.RequestException as exc:
                    failures.append(f"client {n} request {i}: {exc!r}")
                    return
                if r.status_code != 201:
                    failures.append(f"client {n} request {i}: {r.status_code} {r.text[:200]}")
                    return
                ids.append(r.json()["id"])
        with lock:
            created.extend(ids)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "clients still running after 300 s"
    assert not failures, failures[:5]
    assert len(created) == len(set(created)) == clients * per_client

    r = requests.get(api(site, f"books/?author={aid}"), timeout=30)
    assert r.status_code == 200
    assert r.json()["count"] == 1600
    r = requests.get(api(site, f"authors/{aid}/"), timeout=30)
    assert r.json()["book_count"] == 1600

    with postgres.connect("bookstore") as conn:
        (rows,) = conn.execute(
            "SELECT count(*) FROM catalog_book WHERE author_id = %s", (aid,)
        ).fetchone()
        (distinct_titles,) = conn.execute(
            "SELECT count(DISTINCT title) FROM catalog_book WHERE author_id = %s", (aid,)
        ).fetchone()
    assert rows == 1600
    assert distinct_titles == 1600


def test_replicas_migrating_at_once_take_turns(postgres):  # noqa: F811
    """Several containers starting together all run migrate: none of them fails."""
    url = postgres.create_database("replicas")
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "x" * 50, "PYTHONDONTWRITEBYTECODE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "migrate", "--noinput"], cwd=EXAMPLE, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    # Exactly one of them applied catalog's first migration.
    assert sum("Applying catalog.0001_initial... OK" in out for out in outputs) == 1
    with postgres.connect("replicas") as conn:
        (n,) = conn.execute("SELECT count(*) FROM django_migrations WHERE app = 'catalog'").fetchone()
    assert n == len(list((EXAMPLE / "catalog" / "migrations").glob("0*.py")))


def test_sqlite_when_no_database_url():
    """Without DATABASE_URL (the demo's mode) the same entrypoint serves from a SQLite file."""
    with tempfile.TemporaryDirectory(prefix="porch-django-sqlite-") as tmp:
        tmp = Path(tmp)
        dep = Deployment(None, tmp / "staticfiles", tmp)
        try:
            dep.manage("collectstatic", "--noinput")
            dep.start()
            with requests.Session() as http:
                aid = create_author(http, dep, "SQLite Author")["id"]
                for title in ("One", "Two"):
                    r = http.post(api(dep, "books/"), json={"title": title, "author": aid}, timeout=10)
                    assert r.status_code == 201, r.text
                assert http.get(api(dep, "books/"), timeout=10).json()["count"] == 2
                assert http.get(dep.url + "/admin/login/", timeout=10).status_code == 200
            dep.proc.send_signal(signal.SIGTERM)
            assert dep.proc.wait(40) == 0, dep.log()
        finally:
            dep.kill()
        assert "waiting for the database" not in dep.log()
        with closing(sqlite3.connect(tmp / "db.sqlite3")) as db:
            rows = db.execute(
                "SELECT b.title FROM catalog_book b JOIN catalog_author a ON a.id = b.author_id "
                "WHERE a.name = 'SQLite Author' ORDER BY b.id"
            ).fetchall()
        assert rows == [("One",), ("Two",)]


# --- stop -----------------------------------------------------------------------------


def test_graceful_stop(site):
    """Last: SIGTERM to the process the entrypoint exec'd (porch) stops it cleanly."""
    assert site.proc.poll() is None, site.log()
    site.proc.send_signal(signal.SIGTERM)
    assert site.proc.wait(40) == 0, site.log()
    # Its workers went with it: nothing is left in the process group the script started.
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(site.proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "porch's workers outlived it"
        time.sleep(0.1)
    with pytest.raises(requests.ConnectionError):
        requests.get(site.url + "/api/", timeout=5)
    log = site.log()
    assert "entrypoint: applying migrations" in log
    assert f"exec {PORCH_BIN} " in log
    assert "Internal Server Error" not in log, log
