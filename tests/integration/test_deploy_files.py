"""The container files of the reference deployment are wired to what the end-to-end test
runs: examples/django/Dockerfile, compose.yaml, front.porch.toml, entrypoint.sh and
.dockerignore. No container engine runs here, so they are parsed and cross-checked.

The Dockerfile has three stages: `build` makes porch's wheel with `pip wheel .` (as
scripts/lib.sh does for the tests), `runtime` installs it with the app's requirements into a
virtualenv on an official python image (the layout the tests run: porch in the venv's bin/,
beside the interpreter its workers use), `front` holds the porch executable alone.
"""

from __future__ import annotations

import importlib.metadata
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
from conftest import PORCH_BIN, ROOT, Porch, free_port, wait_for_port

EXAMPLE = ROOT / "examples" / "django"
BUILD_ONLY = re.compile(r"(-dev\b|^gcc|^g\+\+|^clang|^build-essential$|^cargo$|^rustc$|^rustup$|"
                        r"^make$|^musl|^python3-venv$|^python3-pip$|^git$|^curl$|^wget$)")
TOOLCHAIN = re.compile(r"\b(cargo|rustc|rustup|maturin)\b")
# What porch may link: glibc and libgcc_s, which every debian:*-slim (and python:*-slim) has.
BASE_LIBS = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1", "libdl.so.2",
             "libpthread.so.0", "librt.so.1", "ld-linux-x86-64.so.2"}
DEBIAN_RELEASES = ("bookworm", "trixie", "forky", "bullseye")


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

    def mounts(self) -> list[dict[str, str]]:
        """The ``--mount=type=...,target=...`` options of a RUN."""
        out = []
        for spec in re.findall(r"--mount=(\S+)", self.args):
            out.append(dict(kv.partition("=")[::2] for kv in spec.split(",")))
        return out


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

    def expand(self, text: str) -> str:
        """``$NAME`` / ``${NAME}`` replaced by this stage's ENV values (others kept)."""
        env = self.env()
        return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), text)

    def runs(self) -> str:
        return "\n".join(r.args for r in self.all("RUN"))

    def commands(self) -> list[list[str]]:
        """Every shell command of every RUN, split into words (--mount flags dropped)."""
        out = []
        for ins in self.all("RUN"):
            out += split_commands(self.expand(re.sub(r"--mount=\S+", "", ins.args)))
        return out

    def apt_installed(self) -> set[str]:
        packages: set[str] = set()
        for words in self.commands():
            if words[:2] == ["apt-get", "install"]:
                packages |= {w for w in words[2:] if not w.startswith("-")}
        return packages

    def copies(self) -> list[tuple[str | None, list[str], str]]:
        """(--from stage or image, sources, destination) of every COPY."""
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

    def workdir(self) -> PurePosixPath:
        (workdir,) = self.all("WORKDIR")
        return PurePosixPath(workdir.args)


def split_commands(text: str) -> list[list[str]]:
    """Shell text -> its simple commands as words: split at && || | ; & and line ends
    (quotes respected, continuations joined), with leading VAR=value assignments and
    redirections (2>&1, >file) dropped."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        skip = False
        for token in [*lexer, ";"]:
            if skip:
                skip = False
            elif token in ("&&", "||", "|", ";", "&"):
                while words and re.match(r"\w+=", words[0]):
                    words.pop(0)
                if words:
                    out.append(words)
                words = []
            elif re.fullmatch(r"[<>]+&?", token):
                if words and words[-1].isdigit():
                    words.pop()  # the fd of 2>&1
                skip = True
            else:
                words.append(token)
    return out


def is_pip(word: str) -> bool:
    return PurePosixPath(word).name in ("pip", "pip3")


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
def stages() -> dict[str, Stage]:
    parsed = parse_dockerfile(EXAMPLE / "Dockerfile")
    names = [s.name for s in parsed]
    assert None not in names and len(set(names)) == len(names), f"stages need unique names: {names}"
    return {s.name: s for s in parsed}


@pytest.fixture(scope="module")
def build(stages) -> Stage:
    return stages["build"]


@pytest.fixture(scope="module")
def runtime(stages) -> Stage:
    return stages["runtime"]


@pytest.fixture(scope="module")
def front(stages) -> Stage:
    return stages["front"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((EXAMPLE / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def front_config() -> dict:
    return tomllib.loads((EXAMPLE / "front.porch.toml").read_text())


@pytest.fixture(scope="module")
def installed_porch() -> importlib.metadata.Distribution:
    """porch as the test virtualenv has it: installed from the wheel scripts/lib.sh built."""
    return importlib.metadata.distribution("porch")


def image_path_to_repo(stage: Stage, image_path: str) -> Path:
    """Map a path inside a stage's image to the repository file COPY put there."""
    target = PurePosixPath(image_path)
    for src_stage, sources, dest in stage.copies():
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
    raise AssertionError(f"no COPY in the {stage.name} stage puts {image_path} into the image")


def host_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def entrypoint_default(name: str) -> str:
    """The default entrypoint.sh gives a variable: NAME="${NAME:-default}"."""
    m = re.search(rf'^{name}="\$\{{{name}:-([^}}]*)\}}"$', e2e.ENTRYPOINT.read_text(), re.M)
    assert m, f"entrypoint.sh has no default for {name}"
    return m.group(1)


def debian_release(image: str) -> str:
    """The Debian release an image tag names (python:3.13-slim-trixie -> trixie)."""
    found = [r for r in DEBIAN_RELEASES if re.search(rf"[:-]{r}\b", image)]
    assert len(found) == 1, f"{image} does not name its Debian release in its tag"
    return found[0]


def pip_wheel_dir(words: list[str]) -> str:
    """The -w/--wheel-dir of a `pip wheel ... .` command, which must build the repository
    root with --no-deps (porch's wheel alone)."""
    assert words[-1] == ".", f"pip wheel does not build the repository root: {words}"
    assert "--no-deps" in words, words
    for flag in ("-w", "--wheel-dir"):
        if flag in words:
            return words[words.index(flag) + 1]
    raise AssertionError(f"pip wheel without -w: {words}")


def pip_wheel_commands(commands: list[list[str]]) -> list[list[str]]:
    out = []
    for words in commands:
        for i in range(len(words) - 1):
            if is_pip(words[i]) and words[i + 1] == "wheel":
                out.append(words[i:])
            elif words[i:i + 3] == ["-m", "pip", "wheel"]:
                out.append(words[i + 1:])
    return out


def run_probe(argv: list[str], admin_bind: str) -> int:
    return subprocess.run(
        argv, env={"PATH": os.environ["PATH"], "PORCH_ADMIN_BIND": admin_bind},
        capture_output=True, timeout=30,
    ).returncode


# --- Dockerfile: stages and bases ------------------------------------------------------


def test_dockerfile_stages_share_one_debian_release(stages):
    """porch links glibc: it must run on the Debian release it was built on. Every base
    and every image a COPY --from takes files out of names the same release."""
    images = [s.base for s in stages.values()]
    images += [src for s in stages.values() for src, _, _ in s.copies() if src and src not in stages]
    for s in stages.values():
        for ins in s.all("RUN"):
            images += [m["from"] for m in ins.mounts() if "from" in m and m["from"] not in stages]
    releases = {image: debian_release(image) for image in images}
    assert len(set(releases.values())) == 1, releases


def test_dockerfile_runtime_is_an_official_python_image(build, runtime):
    # python:<version>-slim[-<release>] from Docker Hub's library, not some other python.
    assert re.fullmatch(r"python:3\.\d+-slim(-[a-z]+)?", runtime.base), runtime.base
    assert re.fullmatch(r"python:3\.\d+-slim(-[a-z]+)?", build.base), build.base
    # No second interpreter beside the image's own, no libpython package.
    assert not any(p.startswith(("python3", "libpython")) for p in runtime.apt_installed())


def test_dockerfile_front_has_no_python(front, runtime):
    assert "python" not in front.base
    assert not any("python" in p or p.startswith("pip") for p in front.apt_installed())
    for words in front.commands():
        assert not any(re.match(r"(python|pip)\d*(\.\d+)?$", PurePosixPath(w).name) for w in words), words
    # From the runtime stage only its collected static files, not its venv or interpreter.
    for src, sources, _ in front.copies():
        if src == "runtime":
            assert [PurePosixPath(p) for p in sources] == [PurePosixPath(runtime.env()["STATIC_ROOT"])]


# --- Dockerfile: the build stage -------------------------------------------------------


def test_build_stage_runs_pip_wheel_like_the_tests(build, runtime):
    """The image's wheel is built the way scripts/lib.sh builds the one the tests install:
    `pip wheel --no-deps -w DIR .` at the repository root, then `pip install DIR/porch-*.whl`."""
    (docker_cmd,) = pip_wheel_commands(build.commands())
    wheels = pip_wheel_dir(docker_cmd)
    # The wheel survives the RUN: not inside a cache mount.
    run = next(r for r in build.all("RUN") if "pip wheel" in r.args)
    for m in run.mounts():
        assert m.get("type") == "cache", m
        assert not PurePosixPath(wheels).is_relative_to(m["target"]), (wheels, m)
    lib = (ROOT / "scripts" / "lib.sh").read_text()
    body = lib[lib.index("build_release()"):]
    body = body[:body.index("\n}\n")]
    lib_commands = split_commands(body)
    (lib_cmd,) = pip_wheel_commands(lib_commands)
    lib_wheels = pip_wheel_dir(lib_cmd)
    assert f"$(ls {lib_wheels}/porch-*.whl)" in body
    assert any(is_pip(w[0]) and "install" in w and "$WHEEL" in w for w in lib_commands)
    # The build requirement (maturin) and backend come from pyproject.toml, as for pip.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(r.startswith("maturin") for r in pyproject["build-system"]["requires"])
    # The runtime installs what this stage's -w directory holds.
    (mount,) = [m for r in runtime.all("RUN") for m in r.mounts() if m.get("from") == "build"]
    assert mount.get("type") == "bind" and PurePosixPath(mount["source"]) == PurePosixPath(wheels)


def test_build_stage_has_a_rust_toolchain_and_caches(build):
    copied_from = {src for src, _, _ in build.copies() if src}
    has_rust = any(src.startswith("rust:") for src in copied_from) or build.base.startswith("rust:") \
        or "rustup" in build.runs()
    assert has_rust, "the build stage has no Rust toolchain"
    env = build.env()
    cargo_home = env.get("CARGO_HOME", "/usr/local/cargo")
    assert f"{cargo_home}/bin" in env.get("PATH", "").split(":"), "cargo is not on the build's PATH"
    run = next(r for r in build.all("RUN") if "pip wheel" in r.args)
    caches = {PurePosixPath(m["target"]) for m in run.mounts() if m.get("type") == "cache"}
    assert PurePosixPath(cargo_home) / "registry" in caches
    assert build.workdir() / "target" in caches
    # Linking needs a C toolchain (ring compiles C too): gcc from the release's packages.
    assert "gcc" in build.apt_installed()
    for ins in build.all("RUN"):
        if "apt-get install" in ins.args:
            assert "--no-install-recommends" in ins.args and "rm -rf /var/lib/apt/lists" in ins.args


def test_build_stage_copies_what_the_wheel_is_built_from(build):
    """The repository's files land at the same relative paths under WORKDIR (the backend
    finds the workspace from its own location), and all that `pip wheel .` reads is there."""
    workdir = build.workdir()
    copied = []
    for src, sources, dest in build.copies():
        if src is not None:
            continue
        into = workdir / dest
        for source in sources:
            path = source.rstrip("/")
            landed = into / PurePosixPath(path).name if (ROOT / path).is_file() and dest.endswith("/") else into
            assert landed == workdir / path, f"COPY {source} {dest} puts it at {landed}"
            copied.append(landed)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    maturin = pyproject["tool"]["maturin"]
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    needed = ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", "pyproject.toml",
              pyproject["project"]["readme"], maturin["manifest-path"], maturin["python-source"],
              *pyproject["build-system"]["backend-path"], *members]
    for path in needed:
        assert (ROOT / path).exists(), path
        inside = workdir / path
        assert any(inside == c or c in inside.parents for c in copied), (
            f"{path} is needed to build the wheel but not copied into the build stage"
        )


def test_build_stage_hands_the_front_the_executable_the_wheel_carries(build, front):
    """porch_build copies cargo's `porch` (release profile, default target dir) into the
    wheel; the front gets that same file out of the build stage."""
    backend = (ROOT / "python" / "build_backend" / "porch_build.py").read_text()
    assert re.search(r'"cargo", "build", "--release", .*"-p", "porch"', backend)
    cargo_config = (ROOT / ".cargo" / "config.toml").read_text()
    assert "target-dir" not in cargo_config and "CARGO_TARGET_DIR" not in build.env()
    release_exe = build.workdir() / "target" / "release" / "porch"
    handed = [words[-1] for words in build.commands()
              if words[0] in ("install", "cp") and release_exe in [build.workdir() / w for w in words[1:-1]]]
    assert len(handed) == 1, f"the build stage does not copy {release_exe} out of its cache: {handed}"
    # ... in the same RUN as `pip wheel`, the one that has target/ mounted.
    run = next(r for r in build.all("RUN") if "pip wheel" in r.args)
    assert str(release_exe.relative_to(build.workdir())) in run.args
    front_exe = [(srcs, dest) for src, srcs, dest in front.copies() if src == "build"]
    assert [srcs for srcs, _ in front_exe] == [handed], front_exe


# --- Dockerfile: the runtime stage -----------------------------------------------------


def test_runtime_installs_the_wheel_into_its_virtualenv(runtime, installed_porch):
    env = runtime.env()
    venv = PurePosixPath(env["VIRTUAL_ENV"])
    assert env["PATH"].split(":")[0] == str(venv / "bin")
    assert any(w[:3] in (["python", "-m", "venv"], ["python3", "-m", "venv"]) and w[-1] == str(venv)
               for w in runtime.commands())
    installs = [w for w in runtime.commands() if is_pip(w[0]) and "install" in w]
    # Every pip install goes into the virtualenv (its pip, or --python its interpreter).
    for words in installs:
        assert words[0] == str(venv / "bin" / "pip") or (
            "--python" in words and words[words.index("--python") + 1] == str(venv / "bin" / "python")
        ), words
    (mount,) = [m for r in runtime.all("RUN") for m in r.mounts() if m.get("from") == "build"]
    wheels = [w for words in installs for w in words if w.endswith(".whl")]
    assert wheels == [f"{mount['target']}/porch-*.whl"], wheels
    requirements = [words[words.index("-r") + 1] for words in installs if "-r" in words]
    assert [image_path_to_repo(runtime, r) for r in requirements] == [EXAMPLE / "requirements.txt"]
    # porch is found on PATH in the venv's bin/ (entrypoint.sh's default), or named there.
    assert env.get("PORCH_BIN", str(venv / "bin" / "porch")) == str(venv / "bin" / "porch")
    assert entrypoint_default("PORCH_BIN") == "porch"
    # ... which is where installing the wheel puts it, as the tests' venv shows.
    files = {str(f) for f in installed_porch.files}
    assert "../../../bin/porch" in files, sorted(files)
    assert "porch/_worker.abi3.so" in files, "the worker extension is not the stable-ABI build"


def test_runtime_has_no_rust_toolchain_or_build_packages(runtime, stages):
    build_only = {p for p in runtime.apt_installed() if BUILD_ONLY.search(p)}
    assert not build_only, f"build-only packages in the runtime image: {build_only}"
    assert not TOOLCHAIN.search(runtime.runs()), "the runtime stage runs a Rust/build tool"
    assert not {"CARGO_HOME", "RUSTUP_HOME"} & set(runtime.env())
    # Files from elsewhere: none copied from the build stage or a rust image; the wheel is
    # bind-mounted for the install only.
    for src, sources, _ in runtime.copies():
        assert src is None, f"the runtime copies {sources} from {src}"
    for ins in runtime.all("RUN"):
        if "apt-get install" in ins.args:
            assert "--no-install-recommends" in ins.args and "rm -rf /var/lib/apt/lists" in ins.args
    # It runs `porch --version` and imports the extension at build time: a wheel that does
    # not install or load fails the build, not the first request.
    commands = runtime.commands()
    assert ["porch", "--version"] in commands
    assert any(w[:2] == ["python", "-c"] and "import porch._worker" in w[2] for w in commands)


def test_porch_links_no_libpython_and_only_what_debian_slim_has(installed_porch):
    def needed(path: Path) -> set[str]:
        r = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", r.stdout))

    exe = needed(PORCH_BIN)
    assert exe and exe <= BASE_LIBS, f"porch needs more than glibc/libgcc_s: {exe - BASE_LIBS}"
    ext = installed_porch.locate_file("porch/_worker.abi3.so")
    assert not any(lib.startswith("libpython") for lib in needed(Path(ext))), (
        "the worker extension links libpython: it would need the image to pin one")


def test_dockerfile_runtime_is_small_non_root_and_owns_only_its_data(runtime):
    env = runtime.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    users = runtime.all("USER")
    assert users and users[-1].args == "app", "the runtime must end as the non-root app user"
    assert any(w[0] == "useradd" and w[-1] == "app" for w in runtime.commands())
    # The app user owns only its data directory, never the code.
    runs = runtime.runs()
    assert "chown -R app" not in runs
    assert all("--chown" not in c.args for c in runtime.all("COPY"))
    assert re.search(r"install -d -o app -g app .*" + re.escape(str(PurePosixPath(env["SQLITE_PATH"]).parent)), runs)
    # collectstatic runs at build time into the STATIC_ROOT porch serves.
    assert "manage.py collectstatic --noinput" in runs
    assert all("--no-cache-dir" in r.args for r in runtime.all("RUN") if re.search(r"\bpip\b.* install", r.args))


def test_dockerfile_entrypoint_is_the_script_the_e2e_test_runs(runtime):
    (entry,) = runtime.all("ENTRYPOINT")
    form = entry.exec_form()
    assert form is not None, "ENTRYPOINT must use the exec form (signals reach porch)"
    assert len(form) == 1
    script = image_path_to_repo(runtime, form[0])
    assert script.resolve() == e2e.ENTRYPOINT.resolve()
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    # The app directory in the image is the example directory of the repository.
    assert image_path_to_repo(runtime, str(runtime.workdir() / "manage.py")) == EXAMPLE / "manage.py"


def test_dockerfile_healthchecks_probe_porch_healthz(runtime, front, tmp_path):
    """Both images' HEALTHCHECKs, run here: they fail on a port nothing listens on and pass
    against a real porch's admin listener."""
    probes = {}
    for stage in (runtime, front):
        (health,) = stage.all("HEALTHCHECK")
        assert "/healthz" in health.args and "PORCH_ADMIN_BIND" in health.args
        assert re.search(r"--interval=\d+s", health.args) and re.search(r"--timeout=\d+s", health.args)
        assert stage.env()["PORCH_ADMIN_BIND"].startswith("127.0.0.1:")
        probes[stage.name] = json.loads(health.args.split("CMD", 1)[1].strip())
    assert probes["runtime"][:2] == ["python3", "-c"]
    assert probes["front"][0] in ("bash", "sh", "porch")
    env = runtime.env()
    (expose,) = runtime.all("EXPOSE")
    assert int(expose.args) == host_port(entrypoint_default("PORCH_BIND"))
    assert env["PORCH_ADMIN_BIND"] == entrypoint_default("PORCH_ADMIN_BIND")

    closed = f"127.0.0.1:{free_port()}"
    for name, argv in probes.items():
        assert run_probe(argv, closed) != 0, f"{name}'s healthcheck passes with nothing listening"
    admin = f"127.0.0.1:{free_port()}"
    config = tmp_path / "front.toml"
    config.write_text(f'[[listener]]\nbind = "127.0.0.1:{free_port()}"\n\n'
                      f'[[listener.route]]\npath = "/static/"\nstatic = "{tmp_path}"\n')
    with Porch(["-c", config, "--admin-bind", admin], bind=False) as p:
        wait_for_port(host_port(admin), p.proc)
        for name, argv in probes.items():
            assert run_probe(argv, admin) == 0, f"{name}'s healthcheck fails against porch\n{p.log()}"


# --- Dockerfile: the front stage -------------------------------------------------------


def test_dockerfile_front_is_porch_with_its_config_and_static_files(front, runtime, front_config):
    users = front.all("USER")
    assert users and users[-1].args not in ("root", "0") and not users[-1].args.startswith("0:")
    assert any(w[0] == "useradd" and w[-1] == users[-1].args for w in front.commands())
    # porch is the entrypoint, found on the default PATH where the build stage's file lands.
    (entry,) = front.all("ENTRYPOINT")
    assert entry.exec_form() == ["porch"]
    (dest,) = [d for src, _, d in front.copies() if src == "build"]
    assert PurePosixPath(dest) == PurePosixPath("/usr/local/bin/porch")
    (cmd,) = front.all("CMD")
    argv = cmd.exec_form()
    assert argv[0] in ("-c", "--config")
    assert image_path_to_repo(front, argv[1]) == EXAMPLE / "front.porch.toml"
    assert any(w[:2] == ["porch", "--check-config"] and argv[1] in w for w in front.commands())
    # The static files it serves are the runtime image's collected ones, at the path the
    # config names; the manifest's hashed names match what the web replicas render.
    (listener,) = front_config["listener"]
    static = {r["path"]: r["static"] for r in listener["route"] if "static" in r}
    (static_dest,) = [d for src, _, d in front.copies() if src == "runtime"]
    assert static == {"/static/": static_dest} and static_dest == runtime.env()["STATIC_ROOT"]
    # Settings: only the admin listener, the same one the runtime image uses.
    env = front.env()
    assert env["PORCH_ADMIN_BIND"] == runtime.env()["PORCH_ADMIN_BIND"]
    assert not {"PORCH_BIND", "PORCH_STATIC", "PORCH_APP", "VIRTUAL_ENV", "PORCH_PYTHON"} & set(env)
    (expose,) = front.all("EXPOSE")
    assert int(expose.args) == host_port(listener["bind"])


def test_dockerignore_keeps_the_context_to_what_the_image_needs(stages):
    lines = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list style: everything ignored by default"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"Cargo.toml", "Cargo.lock", ".cargo", "crates", "python", "pyproject.toml",
            "README.md", "examples/django"} <= allowed
    for generated in ("examples/django/staticfiles", "examples/django/db.sqlite3"):
        assert generated in lines
    assert not any(a.startswith("target") or a.startswith(".venv") for a in allowed)
    # Every file a COPY takes from the context exists and is let into the context.
    for stage in stages.values():
        for src, sources, _ in stage.copies():
            if src is not None:
                continue
            for source in sources:
                path = PurePosixPath(source.rstrip("/"))
                assert (ROOT / path).exists(), f"{stage.name}: COPY {source}: no such file"
                assert any(path == PurePosixPath(a) or PurePosixPath(a) in path.parents for a in allowed), (
                    f"{stage.name}: COPY {source} is excluded by .dockerignore")


# --- entrypoint ------------------------------------------------------------------------


def test_entrypoint_execs_porch_with_static_and_health(runtime):
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
    names = set(runtime.env()) | {k for k in e2e.Deployment("postgresql://x/y", Path("/s"), Path("/w")).env
                                  if k.startswith("PORCH_")}
    for name in sorted(n for n in names if n.startswith("PORCH_") or n == "STATIC_ROOT"):
        if name in ("PORCH_CMD_ARGS", "PORCH_WHEEL"):  # PORCH_WHEEL: the suite's own, not a setting
            continue
        assert "${" + name in text or "$" + name in text, f"entrypoint.sh ignores {name}"
    # The Python it runs manage.py with is the virtualenv's, as in the image.
    assert re.search(r'PYTHON="\$VIRTUAL_ENV/bin/python"', text)
    r = subprocess.run(["sh", "-n", str(e2e.ENTRYPOINT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_e2e_test_runs_the_repository_entrypoint_with_porch_as_the_image_has_it(runtime):
    """The e2e test and the image run the same layout: porch in the virtualenv's bin/,
    installed from the wheel, beside the interpreter its workers and manage.py use."""
    dep = e2e.Deployment("postgresql://x/y", Path("/s"), Path("/w"))
    assert e2e.ENTRYPOINT == EXAMPLE / "entrypoint.sh"
    assert dep.env["PORCH_BIN"] == str(PORCH_BIN)
    assert Path(dep.env["PORCH_BIN"]).parent.resolve() == (Path(dep.env["VIRTUAL_ENV"]) / "bin").resolve()
    assert Path(runtime.env()["VIRTUAL_ENV"]) / "bin" / "porch" == Path(
        runtime.env().get("PORCH_BIN", Path(runtime.env()["VIRTUAL_ENV"]) / "bin" / "porch"))
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
    # The runtime image installs no libpq: psycopg must bring its own.
    assert "psycopg[binary]" in (EXAMPLE / "requirements.txt").read_text()


# --- compose ---------------------------------------------------------------------------


def test_compose_db_service(compose):
    db = compose["services"]["db"]
    assert db["image"] == "postgres:15"
    test = db["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "pg_isready" in " ".join(test[1:])
    volume, _, mount = db["volumes"][0].partition(":")
    assert mount == "/var/lib/postgresql/data"
    assert volume in compose["volumes"], "the database volume must be a named volume"


def check_build(build: dict, stages: dict[str, Stage], target: str) -> None:
    assert (EXAMPLE / build["context"]).resolve() == ROOT.resolve()
    assert (ROOT / build["dockerfile"]).resolve() == (EXAMPLE / "Dockerfile").resolve()
    assert build["target"] == target and target in stages


def test_compose_web_service(compose, stages, runtime):
    web = compose["services"]["web"]
    check_build(web["build"], stages, "runtime")
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


def test_compose_scale_profile_front(compose, front_config, stages, runtime, front):
    svc = compose["services"]["front"]
    web = compose["services"]["web"]
    assert svc["profiles"] == ["scale"]
    check_build(svc["build"], stages, "front")
    # Two targets, two tags: one image name for both would let one build overwrite the other.
    assert svc["image"] != web["image"]
    assert svc["depends_on"]["web"]["condition"] == "service_healthy"
    # It runs the front image's porch -c <config>, unless compose says otherwise.
    argv = svc.get("entrypoint") or [*front.all("ENTRYPOINT")[0].exec_form(),
                                     *(svc.get("command") or front.all("CMD")[0].exec_form())]
    assert argv[0] == "porch" and argv[1] in ("-c", "--config")
    assert image_path_to_repo(front, argv[2]) == EXAMPLE / "front.porch.toml"
    # porch reads PORCH_* variables as settings: none may give the front the app's listener.
    assert not {"PORCH_BIND", "PORCH_STATIC", "PORCH_APP"} & set(front.env())
    assert not any(k.startswith("PORCH_") for k in svc.get("environment", {}))
    # The front image's healthcheck reads PORCH_ADMIN_BIND: front's admin listener is that one.
    admin = argv[argv.index("--admin-bind") + 1] if "--admin-bind" in argv else front.env()["PORCH_ADMIN_BIND"]
    assert admin == front.env()["PORCH_ADMIN_BIND"]

    (listener,) = front_config["listener"]
    (port,) = svc["ports"]
    assert port.endswith(":" + str(host_port(listener["bind"])))
    if host_port(listener["bind"]) < 1024:  # the non-root user binds a privileged port
        assert svc["sysctls"]["net.ipv4.ip_unprivileged_port_start"] in (0, "0")
    routes = {r["path"]: r for r in listener["route"]}
    assert routes["/static/"]["static"] == runtime.env()["STATIC_ROOT"]
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
