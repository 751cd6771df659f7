"""Reads the whole request body and answers with its sha256 in hex.

Reads in 64 KiB chunks up to CONTENT_LENGTH, or to the end of input when the server says
the input is terminated (chunked uploads), as PEP 3333 allows.
"""

import hashlib

CHUNK = 64 * 1024


def application(environ, start_response):
    digest = hashlib.sha256()
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length.strip():
        remaining = int(length)
        while remaining > 0:
            chunk = stream.read(min(CHUNK, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    elif environ.get("wsgi.input_terminated"):
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    body = digest.hexdigest().encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
