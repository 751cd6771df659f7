"""``python -m porch ARGS``: runs the ``porch`` executable installed with this package."""

import os
import sys
import sysconfig


def main() -> None:
    exe = os.path.join(sysconfig.get_path("scripts"), "porch")
    if not os.access(exe, os.X_OK):
        sys.exit(f"porch: the porch executable is missing at {exe}; reinstall with `{sys.executable} -m pip install --force-reinstall porch`")
    os.execv(exe, [exe, *sys.argv[1:]])


if __name__ == "__main__":
    main()
