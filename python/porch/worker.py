"""A porch worker process: ``python -m porch.worker``, started by the porch front.

Everything happens in the Rust extension: it reads the spec and socket the front set up,
imports the app, serves requests until the front closes the socket, and returns the exit
status (3: the app failed to import, with its traceback on stderr). A Gunicorn configuration
file's worker hooks run here too (see ``porch.hooks``).
"""

import sys

from porch._worker import interrupted, main


def run() -> int:
    code = main()
    # Gunicorn's worker_int / worker_exit hooks, when a configuration file has them.
    hooks = sys.modules.get("porch.hooks")
    if hooks is not None:
        hooks.worker_stopping(interrupted())
    return code


if __name__ == "__main__":
    sys.exit(run())
