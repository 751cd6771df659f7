"""The bounded queue in front of the workers: when it is full, porch answers 503 with
Retry-After at once instead of piling up requests."""

from __future__ import annotations

import threading
import time

import requests

from conftest import wait_until


def test_full_queue_gets_503_with_retry_after(porch, tmp_path):
    p = porch("-w", "1", "--threads", "1", "--backlog", "2", "wsgiapp:application")
    marker = tmp_path / "busy"
    busy = {}

    def occupy():
        busy["r"] = requests.get(f"{p.url}/sleep?s=3&marker={marker}", timeout=20)

    t = threading.Thread(target=occupy)
    t.start()
    assert wait_until(marker.exists, 5), "the worker never got busy"

    results = []
    lock = threading.Lock()

    def one(i):
        started = time.monotonic()
        try:
            r = requests.get(f"{p.url}/say?text=q{i}", timeout=20)
            item = (r.status_code, r.headers.get("Retry-After"), r.text, time.monotonic() - started, i)
        except requests.RequestException as e:
            item = (repr(e), None, "", time.monotonic() - started, i)
        with lock:
            results.append(item)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(60)]
    for th in ts:
        th.start()
    for th in ts:
        th.join(25)
    t.join(25)
    assert busy["r"].status_code == 200

    rejected = [r for r in results if r[0] == 503]
    served = [r for r in results if r[0] == 200]
    other = [r for r in results if r[0] not in (200, 503)]
    assert not other, other[:5]
    assert rejected, "no request was turned away although the queue holds 2"
    assert len(served) >= 2, "the queued requests were not served"
    for status, retry_after, text, elapsed, i in rejected:
        assert retry_after is not None and retry_after.strip().isdigit(), retry_after
        assert elapsed < 2.0, f"a 503 took {elapsed:.2f}s: it waited instead of being turned away"
    for status, retry_after, text, elapsed, i in served:
        assert text == f"q{i}"
