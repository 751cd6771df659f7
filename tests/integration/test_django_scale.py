"""The `scale` profile of examples/django/compose.yaml without a container engine: two
replicas of the bookstore (the same entrypoint script, one PostgreSQL database) behind a
porch front configured by examples/django/front.porch.toml, all on loopback.

The only changes to the front's file are the addresses: its listener, the static folder,
and the pool's servers (compose's `web:8000`, which resolves to every replica, becomes the
replicas' two loopback addresses).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import Porch, free_port, wait_for_port
from pg import postgres  # noqa: F401  (fixture)
from test_django_example import EXAMPLE, ONE_YEAR, Deployment, api, create_author

MARKER = "served-by-front.txt"


def front_config(static_dir: Path, port: int, servers: list[str]) -> str:
    text = (EXAMPLE / "front.porch.toml").read_text()
    for old, new in (
        ('bind = "0.0.0.0:80"', f'bind = "127.0.0.1:{port}"'),
        ('static = "/app/staticfiles"', f'static = "{static_dir}"'),
        ('servers = ["web:8000"]', "servers = [" + ", ".join(f'"{s}"' for s in servers) + "]"),
    ):
        assert text.count(old) == 1, f"front.porch.toml no longer has {old!r}"
        text = text.replace(old, new)
    return text


class Scaled:
    def __init__(self, replicas: list[Deployment], front: Porch, front_url: str, static: Path):
        self.replicas = replicas
        self.front = front
        self.url = front_url
        self.static_root = static

    def logs(self) -> str:
        parts = [f"--- front\n{self.front.log()}\n{self.front.stdout()}"]
        parts += [f"--- replica {i}\n{r.log()}" for i, r in enumerate(self.replicas)]
        return "\n".join(parts)


@pytest.fixture(scope="module")
def scaled(postgres):  # noqa: F811
    database_url = postgres.create_database("bookstore")
    with tempfile.TemporaryDirectory(prefix="porch-django-scale-") as tmp:
        tmp = Path(tmp)
        replicas = []
        for i in range(2):
            (tmp / f"r{i}").mkdir()
            dep = Deployment(database_url, tmp / "staticfiles", tmp / f"r{i}")
            dep.env["PORCH_WORKERS"] = "1"
            replicas.append(dep)
        front = None
        try:
            replicas[0].manage("collectstatic", "--noinput")
            # The front has its own copy of the files (as each container has), plus one file
            # the replicas do not have.
            front_static = tmp / "front-static"
            shutil.copytree(tmp / "staticfiles", front_static)
            (front_static / MARKER).write_text("front\n")

            # Both replicas start at once, migrating the same empty database, as compose does.
            errors: list[BaseException] = []

            def start(dep: Deployment) -> None:
                try:
                    dep.start()
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)

            threads = [threading.Thread(target=start, args=(d,)) for d in replicas]
            for t in threads:
                t.start()
            for t in threads:
                t.join(200)
            assert not errors, errors[0]

            port = free_port()
            config = tmp / "front.porch.toml"
            config.write_text(
                front_config(front_static, port, [f"127.0.0.1:{d.port}" for d in replicas])
            )
            front = Porch(["-c", str(config)], bind=False, wait=False, cwd=tmp)
            try:
                wait_for_port(port, front.proc, timeout=30)
            except Exception as exc:
                raise RuntimeError(f"the front did not start ({exc}):\n{front.log()}") from None
            yield Scaled(replicas, front, f"http://127.0.0.1:{port}", tmp / "staticfiles")
        finally:
            if front is not None:
                front.__exit__(None, None, None)
            for dep in replicas:
                dep.kill()


def replica_hits(dep: Deployment, path: str) -> int:
    return len(re.findall(rf'"GET {re.escape(path)} HTTP/1\.1" 200 ', dep.log()))


def test_front_serves_static_files_itself(scaled):
    r = requests.get(f"{scaled.url}/static/{MARKER}", timeout=10)
    assert r.status_code == 200, scaled.logs()
    assert r.text == "front\n"
    # A hashed admin stylesheet, with the long-lived caching headers.
    manifest = (scaled.static_root / "staticfiles.json").read_text()
    hashed = re.search(r'"admin/css/base\.css": "(admin/css/base\.[0-9a-f]{12}\.css)"', manifest)
    assert hashed, "staticfiles.json has no hashed admin/css/base.css"
    r = requests.get(f"{scaled.url}/static/{hashed.group(1)}", timeout=10)
    assert r.status_code == 200
    assert r.content == (scaled.static_root / hashed.group(1)).read_bytes()
    cache = r.headers.get("Cache-Control", "")
    max_age = re.search(r"max-age=(\d+)", cache)
    assert max_age and int(max_age.group(1)) >= ONE_YEAR and "immutable" in cache, cache


def test_front_proxies_the_api(scaled):
    with requests.Session() as http:
        author = create_author(http, scaled, "Behind The Front")
        r = http.post(api(scaled, "books/"), json={"title": "Proxied", "author": author["id"]},
                      timeout=10)
        assert r.status_code == 201, r.text
        r = http.post(api(scaled, "books/"), json={"title": "", "author": author["id"]}, timeout=10)
        assert r.status_code == 400 and r.json() == {"title": ["This field may not be blank."]}
        assert http.get(api(scaled, "books/987654321/"), timeout=10).status_code == 404
        # Links the app builds point at the front (the client's Host reaches the app).
        for i in range(25):
            http.post(api(scaled, "books/"), json={"title": f"p{i}", "author": author["id"]},
                      timeout=10)
        page = http.get(api(scaled, f"books/?author={author['id']}"), timeout=10).json()
        assert page["count"] == 26
        assert page["next"] == f"{scaled.url}/api/books/?author={author['id']}&page=2"
        # The admin pages come through too.
        r = http.get(scaled.url + "/admin/login/", timeout=10)
        assert r.status_code == 200 and "csrfmiddlewaretoken" in r.text


def test_front_balances_across_replicas(scaled):
    path = "/api/books/?search=balance-probe"
    for _ in range(20):
        r = requests.get(scaled.url + path, timeout=10)
        assert r.status_code == 200 and r.json()["count"] == 0
    deadline = time.monotonic() + 10
    while sum(replica_hits(d, path) for d in scaled.replicas) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    hits = [replica_hits(d, path) for d in scaled.replicas]
    assert sum(hits) == 20, (hits, scaled.logs())
    # round_robin: each of the two replicas takes its turn.
    assert min(hits) >= 5, hits


def test_a_replica_going_away_fails_no_request(scaled):
    """Last: one replica stops; the front sends everything to the other."""
    gone = scaled.replicas[1]
    gone.proc.send_signal(15)
    assert gone.proc.wait(40) == 0, gone.log()
    for _ in range(10):
        r = requests.get(api(scaled, "authors/"), timeout=10)
        assert r.status_code == 200, (r.status_code, scaled.logs())
