#!/bin/sh
# Start the bookstore API on porch: wait for the database, apply migrations, then exec porch
# (so porch is PID 1 in a container and receives the stop signals itself).
#
# The container image, scripts/demo and the end-to-end test all run this script.
#
# Environment:
#   DATABASE_URL       postgresql://... (SQLite when unset; see bookstore/settings.py)
#   DB_WAIT_SECONDS    how long to wait for the database to accept connections (default 60)
#   STATIC_ROOT        collected static files, served at /static/ (default ./staticfiles)
#   PORCH_BIN          the porch binary (default: porch on PATH)
#   PORCH_BIND         the listener (default 0.0.0.0:8000)
#   PORCH_ADMIN_BIND   the admin listener with /healthz and /metrics (default 127.0.0.1:9000)
#   PORCH_WORKERS      worker processes (default: porch's own, one per core)
#   PORCH_THREADS      Python threads per worker (default: porch's own)
#   PYTHON             the Python for manage.py (default $VIRTUAL_ENV/bin/python, else python3)
# Extra arguments are passed to porch before the application, e.g. --timeout 60.
set -eu

APP_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
cd "$APP_DIR"

if [ -z "${PYTHON:-}" ]; then
    if [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON="$VIRTUAL_ENV/bin/python"; else PYTHON=python3; fi
fi
PORCH_BIN="${PORCH_BIN:-porch}"
PORCH_BIND="${PORCH_BIND:-0.0.0.0:8000}"
PORCH_ADMIN_BIND="${PORCH_ADMIN_BIND:-127.0.0.1:9000}"
STATIC_ROOT="${STATIC_ROOT:-$APP_DIR/staticfiles}"
export STATIC_ROOT

if [ -n "${DATABASE_URL:-}" ]; then
    echo "entrypoint: waiting for the database (up to ${DB_WAIT_SECONDS:-60}s)" >&2
    "$PYTHON" - <<'PY'
import os
import sys
import time

import psycopg

url = os.environ["DATABASE_URL"]
deadline = time.monotonic() + float(os.environ.get("DB_WAIT_SECONDS", "60"))
while True:
    try:
        psycopg.connect(url, connect_timeout=3).close()
        break
    except psycopg.OperationalError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"entrypoint: the database is still unreachable: {exc}")
        time.sleep(0.5)
PY
fi

echo "entrypoint: applying migrations" >&2
"$PYTHON" manage.py migrate --noinput

set -- --bind "$PORCH_BIND" --admin-bind "$PORCH_ADMIN_BIND" \
    --static "/static/=$STATIC_ROOT" --chdir "$APP_DIR" --access-logfile - "$@"
if [ -n "${PORCH_WORKERS:-}" ]; then set -- --workers "$PORCH_WORKERS" "$@"; fi
if [ -n "${PORCH_THREADS:-}" ]; then set -- --threads "$PORCH_THREADS" "$@"; fi

echo "entrypoint: exec $PORCH_BIN $* bookstore.wsgi:application" >&2
exec "$PORCH_BIN" "$@" bookstore.wsgi:application
