"""PEP 517 backend: maturin, with porch's front executable built first and packed in.

maturin builds one Rust crate into a wheel (here the worker extension, porch._worker). The
`porch` executable is a second crate that must not link Python, so this wraps maturin's
hooks: build the executable with cargo, place it where `[tool.maturin] data` points
(`scripts/porch`, installed into the environment's bin/), then let maturin pack both.
A wheel without the front is never produced: a failed cargo build fails the wheel.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import maturin
from maturin import *  # noqa: F401,F403  (every other PEP 517 hook, unchanged)

ROOT = Path(__file__).resolve().parents[2]
DATA_SCRIPTS = ROOT / "target" / "wheel-data" / "scripts"


def _build_front() -> None:
    cmd = ["cargo", "build", "--release", "--locked", "-p", "porch", "--message-format=json-render-diagnostics"]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, check=True)
    exe = None
    for line in proc.stdout.decode().splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "porch":
            exe = msg["executable"]
    if exe is None:
        raise RuntimeError("cargo built no `porch` executable")
    DATA_SCRIPTS.mkdir(parents=True, exist_ok=True)
    dest = DATA_SCRIPTS / "porch"
    shutil.copy2(exe, dest)
    os.chmod(dest, 0o755)
    # The release profile keeps line tables for profiling target/release/porch; the copy
    # users install needs only the symbols (33 MB -> 7 MB).
    if shutil.which("strip"):
        subprocess.run(["strip", "--strip-debug", str(dest)], check=True)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    DATA_SCRIPTS.mkdir(parents=True, exist_ok=True)  # maturin checks the data folder exists
    return maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    DATA_SCRIPTS.mkdir(parents=True, exist_ok=True)
    return maturin.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _build_front()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _build_front()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)
