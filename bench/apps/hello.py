"""WSGI hello world: the smallest app, so the numbers show the server's own cost."""

BODY = b"Hello, World!"


def application(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))],
    )
    return [BODY]
