"""An app that needs packages from a virtualenv (``--venv`` or ``$VIRTUAL_ENV``)."""

import json
import sys

import localpkg  # installed only in the test's virtualenv
import pthpkg  # reachable only through a .pth file in that virtualenv's site-packages


def application(environ, start_response):
    body = json.dumps(
        {
            "localpkg": localpkg.GREETING,
            "localpkg_file": localpkg.__file__,
            "pthpkg": pthpkg.VALUE,
            "sys_path": sys.path,
        }
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
