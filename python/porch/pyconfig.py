"""Gunicorn Python configuration files, read for porch's front.

``python -m porch.pyconfig SOURCE`` runs a ``gunicorn.conf.py`` (``SOURCE`` is a path, or
``python:MODULE``) the way Gunicorn does, in the app's own interpreter, and prints one JSON
object on stdout: ``{"settings": {NAME: VALUE}, "hooks": [NAME, ...]}``. The front maps the
setting names it knows and ignores the others, as Gunicorn ignores names it does not know.
Anything the file prints goes to stderr, so it never mixes with the JSON.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys

# Gunicorn's server hooks: callables named so in the file.
HOOKS = (
    "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init",
    "worker_int", "worker_abort", "pre_exec", "pre_request", "post_request", "child_exit",
    "worker_exit", "nworkers_changed", "on_exit", "ssl_context",
)


def namespace(source: str) -> dict:
    """The names the file (or module) defines, as Gunicorn reads them."""
    if source.startswith("python:"):
        return dict(vars(importlib.import_module(source[len("python:"):])))
    path = os.path.abspath(source)
    if not os.path.exists(path):
        raise SystemExit(f"the configuration file {source} does not exist")
    return runpy.run_path(path, run_name="__config__")


def plain(value):
    """A JSON-able copy of a setting's value, or ``None`` for values the front cannot use."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v) for v in value]
        return None if any(i is None for i in items) else items
    if isinstance(value, dict):
        items = {str(k): plain(v) for k, v in value.items()}
        return None if any(v is None for v in items.values()) else items
    return None


def read(source: str) -> dict:
    settings, hooks = {}, []
    for name, value in namespace(source).items():
        if name.startswith("_"):
            continue
        if name in HOOKS and callable(value):
            hooks.append(name)
            continue
        if callable(value) or type(value).__name__ == "module":
            continue
        value = plain(value)
        if value is not None:
            settings[name] = value
    return {"settings": settings, "hooks": hooks}


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m porch.pyconfig FILE|python:MODULE")
    out = sys.stdout
    sys.stdout = sys.stderr  # print() in the file must not corrupt the JSON
    result = read(sys.argv[1])
    out.write(json.dumps(result))
    out.flush()


if __name__ == "__main__":
    main()
