"""Memory of the front while it sends large static files: bounded by a small amount per
download, whatever the file size, the number of downloads or how fast clients read.

The front's resident memory (``VmRSS`` of the ``porch`` process, not its workers) is
sampled while clients download a 16 MiB file over real loopback sockets.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from conftest import rss_kib

SIZE = 16 * 1024 * 1024
CLIENTS = 16
# Each download holds one read buffer of 256 KiB (the front grows by 3-6 MiB for 16
# of them); the bound leaves room for the allocator and the runtime's threads. A front
# that gathers the file in memory needs 16 MiB per download (256 MiB here).
GROWTH_LIMIT = 16 * 1024 * 1024
STALLED_GROWTH_LIMIT = 8 * 1024 * 1024


def rss(pid: int) -> int:
    return rss_kib(pid) * 1024


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError("no Threads")


class Sampler(threading.Thread):
    """The front's peak RSS and thread count until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.peak_threads = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, rss(self.pid))
            self.peak_threads = max(self.peak_threads, threads(self.pid))
            time.sleep(0.02)


def download(port: int, path: str, rounds: int, deadline: float, pause: float = 0.0) -> list[str]:
    """`rounds` keep-alive GETs of `path` on one connection; the sha256 of each body.
    With `pause`, the client sleeps that long after every 64 KiB it reads (a slow reader)."""
    digests = []
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        for _ in range(rounds):
            if time.monotonic() > deadline:
                break
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                assert chunk, "connection closed before the head"
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            h = hashlib.sha256(rest)
            got = len(rest)
            while got < length:
                want = min(len(buf), length - got, 65536 if pause else len(buf))
                n = s.recv_into(view[:want])
                assert n, f"connection closed after {got} of {length} bytes"
                h.update(view[:n])
                got += n
                if pause:
                    time.sleep(pause)
            digests.append(h.hexdigest())
    return digests


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    root = tmp_path_factory.mktemp("static-memory")
    data = os.urandom(SIZE)
    (root / "big.bin").write_bytes(data)
    return root, hashlib.sha256(data).hexdigest()


def run_clients(server, clients: int, rounds: int, seconds: float, pause: float = 0.0):
    pid = server.proc.pid
    # Warm up: the file in the page cache, the runtime's threads started.
    download(server.port, "/static/big.bin", 1, time.monotonic() + 30)
    time.sleep(0.2)
    base, base_threads = rss(pid), threads(pid)
    sampler = Sampler(pid)
    sampler.start()
    deadline = time.monotonic() + seconds
    results: list = [None] * clients
    errors: list = []

    def one(i):
        try:
            results[i] = download(server.port, "/static/big.bin", rounds, deadline, pause)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(seconds + 60)
    sampler.done.set()
    sampler.join()
    assert not errors, errors
    return base, base_threads, sampler, results


def test_front_memory_stays_bounded_while_16_clients_download_a_large_file(porch, big):
    root, sha = big
    server = porch("-w", "1", "--static", f"/static/={root}", "wsgiapp:application")
    base, base_threads, sampler, results = run_clients(server, CLIENTS, rounds=3, seconds=8)
    downloads = [d for r in results for d in r]
    assert len(downloads) >= CLIENTS, "every client finished at least one download"
    assert all(d == sha for d in downloads)
    growth = sampler.peak - base
    assert growth < GROWTH_LIMIT, (
        f"front RSS grew by {growth / 2**20:.1f} MiB for {CLIENTS} downloads "
        f"(threads {base_threads} -> {sampler.peak_threads})"
    )


def test_slow_readers_do_not_make_the_front_hold_the_file(porch, big):
    """A client that reads slowly keeps the front waiting on the socket: what it has not
    taken stays in the file, not in the front's memory."""
    root, _ = big
    server = porch("-w", "1", "--static", f"/static/={root}", "wsgiapp:application")
    pid = server.proc.pid
    download(server.port, "/static/big.bin", 1, time.monotonic() + 30)
    time.sleep(0.2)
    base = rss(pid)
    socks = []
    try:
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: test\r\n\r\n")
            s.recv(65536)  # the head and the start of the body, then nothing more
            socks.append(s)
        # Give the front time to read ahead as far as it would.
        peak = base
        for _ in range(50):
            peak = max(peak, rss(pid))
            time.sleep(0.02)
    finally:
        for s in socks:
            s.close()
    growth = peak - base
    assert growth < STALLED_GROWTH_LIMIT, (
        f"front RSS grew by {growth / 2**20:.1f} MiB for 8 stalled downloads"
    )
