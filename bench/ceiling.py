"""The ceiling: each bench app called in a loop inside this one process, with no HTTP.

The environ is built once per app (the input stream is rewound before each call), the app
is called, its response consumed and closed, as a server would. Prints one JSON object:
{scenario: {"wall": calls per second, "cpu": calls per CPU-second}}; the two differ when
the app waits (the database view waits on PostgreSQL), and calls per CPU-second is the
app's own cost per core. Run it pinned to one core (bench/run does).

usage: ceiling.py SECONDS SCENARIO...
"""

import io
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "apps"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

UPLOAD_SIZE = 1024 * 1024


def base_environ(method, path, body=b"", content_type=""):
    return {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "wrk",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }


def target(scenario):
    """(app, environ) for a scenario name."""
    if scenario == "hello":
        from hello import application

        return application, base_environ("GET", "/")
    if scenario == "upload":
        from upload import application

        body = b"x" * UPLOAD_SIZE
        return application, base_environ("POST", "/", body, "application/octet-stream")
    if scenario in ("django-json", "django-db"):
        from benchsite.wsgi import application

        return application, base_environ("GET", "/json" if scenario == "django-json" else "/db")
    raise SystemExit(f"unknown scenario {scenario}")


def measure(app, environ, seconds):
    status = []

    def start_response(s, headers, exc_info=None):
        status.append(s)
        return lambda data: None

    stream = environ["wsgi.input"]

    def call():
        stream.seek(0)
        result = app(dict(environ), start_response)
        try:
            for _ in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    call()
    if not status or not status[-1].startswith("200"):
        raise SystemExit(f"app answered {status[-1:]} instead of 200")
    # Warm-up, then count calls in whole batches until the time is up.
    deadline = time.perf_counter() + min(1.0, seconds / 2)
    while time.perf_counter() < deadline:
        call()
    calls = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(20):
            call()
        calls += 20
        now = time.perf_counter()
        if now >= deadline:
            break
    cpu = time.process_time() - cpu_start
    return {"wall": round(calls / (now - start), 1), "cpu": round(calls / cpu, 1) if cpu else None}


def main():
    seconds = float(sys.argv[1])
    out = {}
    for scenario in sys.argv[2:]:
        app, environ = target(scenario)
        out[scenario] = measure(app, environ, seconds)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
