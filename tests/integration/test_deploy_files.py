"""The container files of the reference deployment are wired to what the end-to-end test
runs: examples/django/Dockerfile, compose.yaml, front.porch.toml, entrypoint.sh and
.dockerignore. No container engine runs here, so they are parsed and cross-checked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
import yaml

import test_django_example as e2e
from conftest import PORCH_BIN, ROOT

EXAMPLE = ROOT / "examples" / "django"
BUILD_ONLY = re.compile(r"(-dev\b|^gcc|^g\+\+|^build-essential$|^cargo$|^rustc$|^make$|"
                        r"^python3-venv$|^python3-pip$|^git$|^curl$|^wget$)")


# --- a small Dockerfile parser ---------------------------------------------------------


@dataclass
class Instruction:
    cmd: str  # upper case: FROM, RUN, COPY, ...
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) else None

    def words(self) -> list[str]:
        """Arguments split like a shell would, flags (``--from=...``) included."""
        return shlex.split(self.args)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for word in ins.words():
                key, _, value = word.partition("=")
                out[key] = value
        return out

    def apt_installed(self) -> set[str]:
        packages: set[str] = set()
        for ins in self.all("RUN"):
            for command in re.split(r"&&|;", ins.args):
                words = command.split()
                if words[:2] == ["apt-get", "install"]:
                    packages |= {w for w in words[2:] if not w.startswith("-")}
        return packages

    def copies(self) -> list[tuple[str | None, list[str], str]]:
        """(--from stage, sources, destination) of every COPY."""
        out = []
        for ins in self.all("COPY"):
            words = ins.words()
            src_stage = None
            paths = []
            for w in words:
                if w.startswith("--from="):
                    src_stage = w.split("=", 1)[1]
                elif not w.startswith("--"):
                    paths.append(w)
            out.append((src_stage, paths[:-1], paths[-1]))
        return out


def parse_dockerfile(path: Path) -> list[Stage]:
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue  # blank, comment or parser directive
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append((start, buf + stripped))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for n, text in logical:
        cmd, _, args = text.partition(" ")
        ins = Instruction(cmd.upper(), args.strip(), n)
        if ins.cmd == "FROM":
            words = ins.words()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"line {n}: {ins.cmd} before the first FROM"
            stages[-1].instructions.append(ins)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(EXAMPLE / "Dockerfile")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((EXAMPLE / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def front_config() -> dict:
    return tomllib.loads((EXAMPLE / "front.porch.toml").read_text())


def image_path_to_repo(stages: list[Stage], image_path: str) -> Path:
    """Map a path inside the runtime image to the repository file COPY put there."""
    target = PurePosixPath(image_path)
    for src_stage, sources, dest in stages[-1].copies():
        if src_stage is not None:
            continue
        for src in sources:
            dest_dir = PurePosixPath(dest)
            if src.endswith("/"):
                try:
                    rel = target.relative_to(dest_dir)
                except ValueError:
                    continue
                return ROOT / src / rel
            if target == dest_dir or target == dest_dir / PurePosixPath(src).name:
                return ROOT / src
    raise AssertionError(f"no COPY in the runtime stage puts {image_path} into the image")


def host_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def entrypoint_default(name: str) -> str:
    """The default entrypoint.sh gives a variable: NAME="${NAME:-default}"."""
    m = re.search(rf'^{name}="\$\{{{name}:-([^}}]*)\}}"$', e2e.ENTRYPOINT.read_text(), re.M)
    assert m, f"entrypoint.sh has no default for {name}"
    return m.group(1)


# --- Dockerfile ------------------------------------------------------------------------


def test_dockerfile_stages_build_porch_against_the_runtime_python(stages):
    names = [s.name for s in stages]
    assert len(stages) >= 2 and len(set(names)) == len(names), names
    runtime = stages[-1]
    rust = next(s for s in stages if s.base.startswith("rust:"))
    # Same Debian release everywhere, so the python3.11 porch links is the one that runs it.
    releases = {re.search(r"(bookworm|trixie|bullseye)", s.base).group(1) for s in stages}
    assert releases == {"bookworm"}, [s.base for s in stages]
    assert "python3-dev" in rust.apt_installed()
    assert any("cargo build --release --locked" in r.args for r in rust.all("RUN"))
    assert {"python3", "libpython3.11"} <= runtime.apt_installed()
    # porch comes from the Rust stage; PORCH_BIN names where it lands.
    porch_copies = [(s, src, dst) for s, src, dst in runtime.copies() if s == rust.name]
    assert porch_copies, "the runtime stage copies nothing from the Rust stage"
    assert runtime.env()["PORCH_BIN"] == porch_copies[0][2]


def test_runtime_image_has_the_libpython_porch_links(stages):
    """The release binary here is built like the image's: the libpython it needs at run
    time comes from a package the runtime stage installs."""
    ldd = subprocess.run(["ldd", str(PORCH_BIN)], capture_output=True, text=True, timeout=30)
    assert ldd.returncode == 0, ldd.stderr
    m = re.search(r"^\s*(libpython3\.\d+\.so\.1\.0) => (\S+)", ldd.stdout, re.M)
    assert m, f"porch does not link a shared libpython:\n{ldd.stdout}"
    soname, resolved = m.groups()
    owner = subprocess.run(
        ["dpkg", "-S", f"/usr/lib/x86_64-linux-gnu/{soname}"], capture_output=True, text=True
    )
    if owner.returncode != 0:
        owner = subprocess.run(["dpkg", "-S", resolved], capture_output=True, text=True)
    assert owner.returncode == 0, f"no Debian package owns {resolved}: {owner.stderr}"
    package = owner.stdout.split(":", 1)[0]
    assert package in stages[-1].apt_installed(), (package, stages[-1].apt_installed())


def test_dockerfile_rust_stage_copies_the_whole_workspace(stages):
    rust = next(s for s in stages if s.base.startswith("rust:"))
    copied = [PurePosixPath(p.rstrip("/")) for s, srcs, _ in rust.copies() if s is None for p in srcs]
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    needed = ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", *members]
    for path in needed:
        assert (ROOT / path).exists(), path
        assert any(PurePosixPath(path) == c or c in PurePosixPath(path).parents for c in copied), (
            f"{path} is needed to build porch but not copied into the Rust stage"
        )


def test_dockerfile_runtime_is_small_non_root_and_has_no_build_tools(stages):
    runtime = stages[-1]
    assert runtime.base == "debian:bookworm-slim"
    build_only = {p for p in runtime.apt_installed() if BUILD_ONLY.search(p)}
    assert not build_only, f"build-only packages in the runtime image: {build_only}"
    for ins in runtime.all("RUN"):
        if "apt-get install" in ins.args:
            assert "--no-install-recommends" in ins.args and "rm -rf /var/lib/apt/lists" in ins.args
    env = runtime.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    users = runtime.all("USER")
    assert users and users[-1].args == "app", "the runtime must end as the non-root app user"
    assert any(re.search(r"useradd .*\bapp$", r.args) for r in runtime.all("RUN"))
    # The app user owns only its data directory, never the code.
    runs = " ".join(r.args for r in runtime.all("RUN"))
    assert "chown -R app" not in runs
    assert all("--chown" not in c.args for c in runtime.all("COPY"))
    assert re.search(r"install -d -o app -g app .*" + re.escape(str(PurePosixPath(env["SQLITE_PATH"]).parent)), runs)
    # collectstatic runs at build time into the STATIC_ROOT porch serves.
    assert "manage.py collectstatic --noinput" in runs


def test_dockerfile_entrypoint_is_the_script_the_e2e_test_runs(stages):
    runtime = stages[-1]
    (entry,) = runtime.all("ENTRYPOINT")
    form = entry.exec_form()
    assert form is not None, "ENTRYPOINT must use the exec form (signals reach porch)"
    assert len(form) == 1
    script = image_path_to_repo(stages, form[0])
    assert script.resolve() == e2e.ENTRYPOINT.resolve()
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    # The app directory in the image is the example directory of the repository.
    (workdir,) = runtime.all("WORKDIR")
    assert image_path_to_repo(stages, workdir.args + "/manage.py") == EXAMPLE / "manage.py"


def test_dockerfile_healthcheck_probes_porch_healthz(stages):
    runtime = stages[-1]
    (health,) = runtime.all("HEALTHCHECK")
    assert "/healthz" in health.args and "PORCH_ADMIN_BIND" in health.args
    assert re.search(r"--interval=\d+s", health.args) and re.search(r"--timeout=\d+s", health.args)
    env = runtime.env()
    assert env["PORCH_ADMIN_BIND"].startswith("127.0.0.1:")
    (expose,) = runtime.all("EXPOSE")
    assert int(expose.args) == host_port(entrypoint_default("PORCH_BIND"))
    assert env["PORCH_ADMIN_BIND"] == entrypoint_default("PORCH_ADMIN_BIND")
    # The healthcheck's probe, run here against a port nothing listens on, fails.
    cmd = health.args.split("CMD", 1)[1].strip()
    argv = json.loads(cmd)
    assert argv[:2] == ["python3", "-c"]
    r = subprocess.run(
        ["python3", "-c", argv[2]], env={"PORCH_ADMIN_BIND": "127.0.0.1:1"}, capture_output=True,
        timeout=30,
    )
    assert r.returncode != 0


def test_dockerignore_keeps_the_context_to_what_the_image_needs():
    lines = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list style: everything ignored by default"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"Cargo.toml", "Cargo.lock", ".cargo", "crates", "examples/django"} <= allowed
    for generated in ("examples/django/staticfiles", "examples/django/db.sqlite3"):
        assert generated in lines
    assert not any(a.startswith("target") or a.startswith(".venv") for a in allowed)


# --- entrypoint ------------------------------------------------------------------------


def test_entrypoint_execs_porch_with_static_and_health(stages):
    text = e2e.ENTRYPOINT.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "manage.py migrate --noinput" in text
    assert re.search(r'^exec "\$PORCH_BIN" "\$@" bookstore\.wsgi:application$', text, re.M)
    for flag in ('--bind "$PORCH_BIND"', '--admin-bind "$PORCH_ADMIN_BIND"',
                 '--static "/static/=$STATIC_ROOT"'):
        assert flag in text
    module, _, attr = "bookstore.wsgi:application".partition(":")
    wsgi = EXAMPLE / (module.replace(".", "/") + ".py")
    assert re.search(rf"^{attr} = ", wsgi.read_text(), re.M)
    # Every PORCH_* / STATIC_ROOT setting of the image and the e2e test is one the script reads.
    names = set(stages[-1].env()) | {k for k in e2e.Deployment("postgresql://x/y", Path("/s"), Path("/w")).env
                                     if k.startswith("PORCH_")}
    for name in sorted(n for n in names if n.startswith("PORCH_") or n == "STATIC_ROOT"):
        if name == "PORCH_CMD_ARGS":
            continue
        assert "${" + name in text or "$" + name in text, f"entrypoint.sh ignores {name}"
    r = subprocess.run(["sh", "-n", str(e2e.ENTRYPOINT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_e2e_test_runs_the_repository_entrypoint_with_the_release_binary():
    dep = e2e.Deployment("postgresql://x/y", Path("/s"), Path("/w"))
    assert e2e.ENTRYPOINT == EXAMPLE / "entrypoint.sh"
    assert dep.env["PORCH_BIN"] == str(PORCH_BIN)
    assert dep.env["DATABASE_URL"].startswith("postgresql://")
    demo = (ROOT / "scripts" / "demo").read_text()
    assert "exec examples/django/entrypoint.sh" in demo
    assert "ensure_venv examples/django/requirements.txt" in demo and "build_release" in demo


def test_example_requirements_are_pinned_like_the_tests():
    """The e2e test runs the example in the test virtualenv: same versions on both sides."""

    def pins(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                name, sep, version = line.partition("==")
                assert sep, f"{path}: {line!r} is not pinned with =="
                out[re.sub(r"\[.*\]", "", name).lower()] = version
        return out

    example = pins(EXAMPLE / "requirements.txt")
    tests = pins(ROOT / "tests" / "requirements.txt")
    assert {"django", "djangorestframework", "psycopg"} <= set(example)
    assert example.items() <= tests.items(), (example, tests)
    assert example["django"].startswith("5.2.")


# --- compose ---------------------------------------------------------------------------


def test_compose_db_service(compose):
    db = compose["services"]["db"]
    assert db["image"] == "postgres:15"
    test = db["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "pg_isready" in " ".join(test[1:])
    volume, _, mount = db["volumes"][0].partition(":")
    assert mount == "/var/lib/postgresql/data"
    assert volume in compose["volumes"], "the database volume must be a named volume"


def test_compose_web_service(compose, stages):
    web = compose["services"]["web"]
    build = web["build"]
    assert (EXAMPLE / build["context"]).resolve() == ROOT.resolve()
    assert (ROOT / build["dockerfile"]).resolve() == (EXAMPLE / "Dockerfile").resolve()
    assert "entrypoint" not in web and "command" not in web, "web runs the image's entrypoint"
    assert web["depends_on"]["db"]["condition"] == "service_healthy"
    assert "profiles" not in web
    env = web["environment"]
    db = compose["services"]["db"]
    user, name = db["environment"]["POSTGRES_USER"], db["environment"]["POSTGRES_DB"]
    assert re.match(rf"postgresql://{user}:[^@]+@db:5432/{name}$", env["DATABASE_URL"])
    assert env["SECRET_KEY"] and "ALLOWED_HOSTS" in env
    (port,) = web["ports"]
    assert port.endswith(":" + str(host_port(env.get("PORCH_BIND", entrypoint_default("PORCH_BIND")))))
    assert port.startswith("${WEB_PORT:-8000}")
    assert "replicas" in web["deploy"]


def test_compose_scale_profile_front(compose, front_config, stages):
    front = compose["services"]["front"]
    web = compose["services"]["web"]
    assert front["profiles"] == ["scale"]
    assert front["build"] == web["build"] and front["image"] == web["image"]
    assert front["depends_on"]["web"]["condition"] == "service_healthy"
    argv = front["entrypoint"]
    assert argv[0] == "porch" and argv[1] in ("-c", "--config")
    config = image_path_to_repo(stages, argv[2])
    assert config == EXAMPLE / "front.porch.toml"
    # porch reads PORCH_* variables as settings: the only ones the front inherits from the
    # image must not give it the app's listener.
    assert "PORCH_BIND" not in stages[-1].env() and "PORCH_STATIC" not in stages[-1].env()
    assert not any(k.startswith("PORCH_") for k in front.get("environment", {}))
    # The image's healthcheck reads PORCH_ADMIN_BIND: front's admin listener is that one.
    admin = argv[argv.index("--admin-bind") + 1]
    assert admin == stages[-1].env()["PORCH_ADMIN_BIND"]

    (listener,) = front_config["listener"]
    (port,) = front["ports"]
    assert port.endswith(":" + str(host_port(listener["bind"])))
    routes = {r["path"]: r for r in listener["route"]}
    assert routes["/static/"]["static"] == stages[-1].env()["STATIC_ROOT"]
    pool = routes["/"]["proxy"]
    web_port = host_port(web["environment"]["PORCH_BIND"])
    assert front_config["upstream"][pool]["servers"] == [f"web:{web_port}"]
    assert front_config["upstream"][pool]["balance"] == "round_robin"


def test_front_config_is_accepted_by_porch():
    """porch itself validates the front's configuration file."""
    r = subprocess.run(
        [str(PORCH_BIN), "--check-config", "-c", str(EXAMPLE / "front.porch.toml")],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"


# --- the migration guide ---------------------------------------------------------------

GUIDE = ROOT / "docs" / "migrating-from-nginx-gunicorn.md"


def guide_blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", GUIDE.read_text(), re.M | re.S)


def test_guide_front_config_is_the_example_file(front_config):
    fronts = [tomllib.loads(b) for b in guide_blocks("toml") if "listener" in tomllib.loads(b)]
    assert fronts == [front_config]


def test_guide_single_host_config_is_accepted_by_porch(tmp_path):
    """The guide's porch.toml for one host, with the bookstore app in place of mysite."""
    (single,) = [b for b in guide_blocks("toml") if "listener" not in tomllib.loads(b)]
    config = tomllib.loads(single)
    assert config["app"] == "mysite.wsgi:application"
    # It says what the guide's porch command line says.
    command = next(b for b in guide_blocks("sh") if b.startswith("porch mysite.wsgi:application"))
    words = shlex.split(command.replace("\\\n", " "))
    assert config["bind"] == [words[words.index("--bind") + 1]]
    assert str(config["workers"]) == words[words.index("--workers") + 1]
    ((prefix, directory),) = config["static"].items()
    assert f"{prefix}={directory}" == words[words.index("--static") + 1]
    path = tmp_path / "porch.toml"
    path.write_text(single.replace("mysite.wsgi", "bookstore.wsgi"))
    r = subprocess.run(
        [str(PORCH_BIN), "--check-config", "-c", str(path)],
        cwd=EXAMPLE, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SECRET_KEY": "check-config", "VIRTUAL_ENV": sys.prefix,
             "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
