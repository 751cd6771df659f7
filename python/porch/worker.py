"""A porch worker process: ``python -m porch.worker``, started by the porch front.

Everything happens in the Rust extension: it reads the spec and socket the front set up,
imports the app, serves requests until the front closes the socket, and returns the exit
status (3: the app failed to import, with its traceback on stderr).
"""

import sys

from porch._worker import main

if __name__ == "__main__":
    sys.exit(main())
