"""An app whose import takes a while (like a big Django project)."""

import time

time.sleep(1.5)


def application(environ, start_response):
    body = b"imported slowly"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
