"""porch: web server and WSGI application server in one binary.

This package carries the worker side: ``porch._worker``, the Rust extension each worker
process runs. The server itself is the ``porch`` executable installed beside this
interpreter (``python -m porch`` runs it too).
"""

from porch._worker import VERSION as __version__

__all__ = ["__version__"]
