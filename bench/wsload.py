"""WebSocket load for bench/run's ws-echo and ws-idle scenarios: picows (a WebSocket client
for asyncio written in Cython) on uvloop, in one process, one thread.

  wsload.py echo URL CONNECTIONS SECONDS [SIZE]
      CONNECTIONS sockets, each sending a SIZE-byte text message and waiting for its echo
      before sending the next, for SECONDS. Prints one JSON line: round trips per second,
      p50/p99 round-trip latency, errors, and this process's own CPU use over the window
      (near 1.0: the client, not the server, set the pace).
  wsload.py hold URL CONNECTIONS SECONDS
      Opens CONNECTIONS sockets (50 handshakes at a time), prints a JSON line with how many
      are open, then holds them, sending nothing, until SIGTERM or SECONDS; then prints how
      many were still open and closes them with 1000.
  wsload.py check URL
      One round trip; exit status 0 when the echo came back.
  wsload.py serve HOST PORT
      A picows echo server, no ASGI and no app: what the client reaches against a server
      that costs next to nothing (the client's own ceiling).

Every call sends at most CONNECTIONS sockets' worth of traffic to URL and stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time
from array import array

import uvloop
from picows import WSCloseCode, WSListener, WSMsgType, ws_connect, ws_create_server

CONNECT_TIMEOUT = 10.0


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Errors:
    def __init__(self):
        self.kinds: dict[str, int] = {}
        self.first: str | None = None

    def add(self, kind, detail=""):
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if self.first is None:
            self.first = f"{kind}: {detail}"[:200]

    @property
    def total(self):
        return sum(self.kinds.values())


class EchoClient(WSListener):
    """Sends, waits for the echo, sends again while `state.running`."""

    def __init__(self, state, payload: bytes):
        self.state = state
        self.payload = payload
        self.transport = None
        self.sent_at = 0
        self.in_flight = False
        self.closing = False
        self.done = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport):
        self.transport = transport

    def start(self):
        self.send()

    def send(self):
        self.in_flight = True
        self.sent_at = time.perf_counter_ns()
        self.transport.send(WSMsgType.TEXT, self.payload)

    def on_ws_frame(self, transport, frame):
        now = time.perf_counter_ns()
        st = self.state
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            if not self.in_flight:
                st.errors.add("unexpected message")
                return
            self.in_flight = False
            if not frame.fin or frame.get_payload_as_bytes() != self.payload:
                st.errors.add("wrong echo", repr(frame.get_payload_as_bytes()[:40]))
            elif st.measuring:
                st.latencies.append((now - self.sent_at) // 1000)
            if st.running:
                self.send()
            elif not self.done.done():
                self.done.set_result(None)
        elif kind == WSMsgType.CLOSE:
            if not self.closing:
                self.closing = True  # counted once, not again as a disconnection
                st.errors.add("closed by server", f"{frame.get_close_code()}")
            transport.disconnect()
        elif kind in (WSMsgType.PING, WSMsgType.PONG):
            pass  # picows answers pings itself
        else:
            st.errors.add("unexpected frame", str(kind))

    def on_ws_disconnected(self, transport):
        if not self.closing:
            self.state.errors.add("disconnected")
        if not self.done.done():
            self.done.set_result(None)


class State:
    def __init__(self):
        self.running = False
        self.measuring = False
        self.errors = Errors()
        self.latencies = array("q")


async def connect(listener_factory, url, errors: Errors):
    try:
        transport, listener = await asyncio.wait_for(ws_connect(listener_factory, url), CONNECT_TIMEOUT)
        return transport, listener
    except Exception as e:  # connection refused, handshake refused, timeout
        errors.add("connect", f"{type(e).__name__}: {e}")
        return None


async def close_all(pairs, wait=5.0):
    for transport, listener in pairs:
        listener.closing = True
        try:
            transport.send_close(WSCloseCode.OK)
        except Exception:
            pass
    try:
        await asyncio.wait_for(asyncio.gather(*(t.wait_disconnected() for t, _ in pairs)), wait)
    except (asyncio.TimeoutError, Exception):
        pass
    for transport, _ in pairs:
        transport.disconnect()


async def echo(url, connections, seconds, size):
    st = State()
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    pairs = [p for p in await asyncio.gather(*(connect(lambda: EchoClient(st, payload), url, st.errors)
                                               for _ in range(connections))) if p]
    connect_errors = st.errors.total
    loop = asyncio.get_running_loop()
    st.running = st.measuring = True
    cpu0, t0 = cpu_seconds(), loop.time()
    for _, listener in pairs:
        listener.start()
    await asyncio.sleep(seconds)
    st.measuring = False
    elapsed, cpu = loop.time() - t0, cpu_seconds() - cpu0
    st.running = False
    # Let the messages in flight come back, then close.
    try:
        await asyncio.wait_for(asyncio.gather(*(l.done for _, l in pairs)), 5.0)
    except asyncio.TimeoutError:
        st.errors.add("no echo", f"{sum(1 for _, l in pairs if not l.done.done())} sockets waiting")
    await close_all(pairs)
    lat = sorted(st.latencies)

    def pct_ms(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1000 if lat else None

    return {
        "rps": len(lat) / elapsed if elapsed else 0.0,
        "requests": len(lat),
        "errors": st.errors.total,
        "error_kinds": st.errors.kinds,
        "first_error": st.errors.first,
        "connected": len(pairs),
        "connect_errors": connect_errors,
        "p50_ms": pct_ms(0.50),
        "p99_ms": pct_ms(0.99),
        "client_cpu": cpu / elapsed if elapsed else None,
        "seconds": elapsed,
    }


class IdleClient(WSListener):
    def __init__(self, errors: Errors):
        self.errors = errors
        self.closing = False
        self.open = False

    def on_ws_connected(self, transport):
        self.open = True

    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.CLOSE:
            if not self.closing:
                self.closing = True  # counted once, not again as a disconnection
                self.errors.add("closed by server", f"{frame.get_close_code()}")
            transport.disconnect()

    def on_ws_disconnected(self, transport):
        if self.open and not self.closing:
            self.errors.add("disconnected")
        self.open = False


async def hold(url, connections, seconds):
    errors = Errors()
    sem = asyncio.Semaphore(50)

    async def one():
        async with sem:
            return await connect(lambda: IdleClient(errors), url, errors)

    t0 = time.monotonic()
    pairs = [p for p in await asyncio.gather(*(one() for _ in range(connections))) if p]
    print(json.dumps({"open": len(pairs), "connect_errors": errors.total, "first_error": errors.first,
                      "connect_seconds": round(time.monotonic() - t0, 3)}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
    still = sum(1 for _, listener in pairs if listener.open)
    print(json.dumps({"open": len(pairs), "open_at_end": still, "errors": errors.total,
                      "error_kinds": errors.kinds, "first_error": errors.first}), flush=True)
    await close_all(pairs)


class CheckClient(WSListener):
    def __init__(self):
        self.reply = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport, frame):
        if not self.reply.done():
            self.reply.set_result((frame.msg_type, frame.get_payload_as_bytes()))


async def check(url):
    message = b"porch bench check"
    transport, listener = await asyncio.wait_for(ws_connect(CheckClient, url), CONNECT_TIMEOUT)
    transport.send(WSMsgType.TEXT, message)
    kind, payload = await asyncio.wait_for(listener.reply, CONNECT_TIMEOUT)
    transport.send_close(WSCloseCode.OK)
    try:
        await asyncio.wait_for(transport.wait_disconnected(), 2.0)
    except asyncio.TimeoutError:
        transport.disconnect()
    if kind != WSMsgType.TEXT or payload != message:
        raise SystemExit(f"wrong echo: {kind} {payload[:60]!r}")


class EchoServer(WSListener):
    def on_ws_frame(self, transport, frame):
        kind = frame.msg_type
        if kind in (WSMsgType.TEXT, WSMsgType.BINARY):
            transport.send(kind, frame.get_payload_as_memoryview())
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def serve(host, port):
    server = await ws_create_server(lambda request: EchoServer(), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main(argv):
    raise_nofile()
    if not argv:
        raise SystemExit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "echo":
        size = int(args[3]) if len(args) > 3 else 32
        print(json.dumps(uvloop.run(echo(args[0], int(args[1]), float(args[2]), size))), flush=True)
    elif cmd == "hold":
        uvloop.run(hold(args[0], int(args[1]), float(args[2])))
    elif cmd == "check":
        uvloop.run(check(args[0]))
    elif cmd == "serve":
        uvloop.run(serve(args[0], int(args[1])))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
