"""A small WSGI app for the TLS and HTTP/2 tests.

  /           JSON: wsgi.url_scheme, SERVER_PROTOCOL, HTTP_HOST, SERVER_NAME, SERVER_PORT
  /sleep?s=N  sleeps N seconds, then answers "slept" (for graceful-shutdown checks)

Any request with ``marker=PATH`` in its query appends its path to PATH when the app is
called, so a test knows the request is inside the app.
  /hsts       sets its own Strict-Transport-Security header
"""

import json
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    headers = [("Content-Type", "text/plain")]
    if "marker" in query:
        with open(query["marker"][0], "a") as f:
            f.write(path + "\n")
    if path == "/sleep":
        time.sleep(float(query.get("s", ["1"])[0]))
        body = b"slept"
    elif path == "/hsts":
        headers.append(("Strict-Transport-Security", "max-age=1; includeSubDomains"))
        body = b"own policy"
    else:
        body = json.dumps(
            {
                "url_scheme": environ["wsgi.url_scheme"],
                "protocol": environ["SERVER_PROTOCOL"],
                "host": environ.get("HTTP_HOST"),
                "server_name": environ["SERVER_NAME"],
                "server_port": environ["SERVER_PORT"],
                "path": path,
                "query": environ.get("QUERY_STRING", ""),
            }
        ).encode()
        headers[0] = ("Content-Type", "application/json")
    headers.append(("Content-Length", str(len(body))))
    start_response("200 OK", headers)
    return [body]
