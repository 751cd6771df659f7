"""The Python half of porch's ASGI worker: the event loop, one task per request, lifespan.

The Rust extension (``porch._worker.Channel``) reads and decodes the front's frames,
builds each request's scope and encodes the response frames; this module runs the app's
coroutines. The loop watches the front's socket: when it is readable, the channel reads
what arrived and hands over up to the free number of requests (``concurrency`` minus the
running ones); the others wait in the channel, where the front can take them back for an
idle worker. Response frames of one loop iteration are written together.
"""

import asyncio
import collections
import inspect
import os
import sys
import traceback

from porch._lifespan import Lifespan

#: Body pieces of a large (spilled) request body, as ``http.request`` events.
BODY_CHUNK = 1 << 20


def is_asgi(app):
    """``--interface auto``: an ``async def app(scope, receive, send)``, or an object
    whose ``__call__`` is a coroutine function, is ASGI 3; anything else is WSGI."""
    if inspect.isclass(app):
        return False
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def new_loop(name):
    """``--loop``: uvloop when asked, or installed and ``auto``; else asyncio's."""
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def serve(app, channel, loop_name, concurrency):
    """Runs the worker until the front closes the socket; returns the exit status."""
    loop = new_loop(loop_name)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(Server(app, channel, concurrency).run())
    finally:
        loop.close()


def log(message):
    sys.stderr.write("[porch] [ERROR] [pid %d] %s\n" % (os.getpid(), message))


def flush_stderr():
    try:
        sys.stderr.flush()
    except Exception:
        pass


class Server:
    def __init__(self, app, channel, concurrency):
        self.app = app
        self.channel = channel
        self.concurrency = concurrency
        #: Every request whose task still runs, by id (for cancel and disconnect).
        self.cycles = {}
        #: Requests whose response is not complete: the places taken. A task that works on
        #: after its response (a background task) no longer takes one, as the front sees it:
        #: it counts a place free once the response ended.
        self.busy = 0
        self.closed = False
        self.flush_scheduled = False

    async def run(self):
        loop = asyncio.get_running_loop()
        self.loop = loop
        lifespan = Lifespan(self.app)
        if not await lifespan.startup():
            return 3  # like an import error: porch stops at start, keeps old workers on reload
        if lifespan.state is not None:
            self.channel.set_state(lifespan.state)
        self.finished = loop.create_future()
        fd = self.channel.fileno()
        self.channel.ready(self.concurrency)
        loop.add_reader(fd, self.on_readable)
        self.on_readable()
        await self.finished
        await lifespan.shutdown()
        return 0

    def schedule_flush(self):
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self):
        self.flush_scheduled = False
        self.channel.flush()

    def on_readable(self):
        self.accept(self.channel.poll(self.concurrency - self.busy))

    def accept(self, polled):
        requests, controls, closed = polled
        for id, scope, body, body_file, response in requests:
            if scope["type"] == "websocket":
                cycle = SocketCycle(self, id, scope, response)
            else:
                cycle = Cycle(self, id, scope, body, body_file, response)
            self.cycles[id] = cycle
            self.busy += 1
            cycle.task = self.loop.create_task(cycle.run())
        for kind, id, event in controls:
            cycle = self.cycles.get(id)
            if cycle is None:
                if kind == "cancel":
                    # Ended as its time ran out, or never started: it must not run now, and
                    # the front waits for an answer to tell a busy loop from a blocked one.
                    self.channel.discard(id)
                    self.channel.stack(id, "(the request was not running in the event loop)\n")
                continue
            if kind == "cancel":
                cycle.time_out()
            elif kind == "event":
                cycle.deliver(event)
            else:
                cycle.client_left = True
                cycle.client_gone()
        if closed and not self.closed:
            self.closed = True
            self.loop.remove_reader(self.channel.fileno())
        self.check_finished()

    def released(self):
        """A response is complete: a request waiting in the channel takes its place."""
        self.busy -= 1
        self.accept(self.channel.take(self.concurrency - self.busy))

    def done(self, id):
        del self.cycles[id]
        self.check_finished()

    def check_finished(self):
        if self.closed and not self.cycles and not self.finished.done():
            self.channel.flush()
            self.finished.set_result(None)


def request_line(scope):
    """``METHOD /path?query`` of a scope, for the error log (a WebSocket handshake is a GET)."""
    line = scope.get("method", "GET") + " " + scope["raw_path"].decode("latin-1")
    if scope["query_string"]:
        line += "?" + scope["query_string"].decode("latin-1")
    return line


class Cycle:
    """One request: the app's ``receive`` and ``send``, and what happens when it ends."""

    __slots__ = (
        "server", "id", "scope", "body", "body_file", "response", "task",
        "body_sent", "file", "gone", "client_left", "waiter", "timed_out", "counted",
    )

    def __init__(self, server, id, scope, body, body_file, response):
        self.server = server
        self.id = id
        self.scope = scope
        self.body = body
        self.body_file = body_file
        self.response = response
        self.task = None
        self.body_sent = False
        self.file = None
        self.gone = False
        self.client_left = False
        self.waiter = None
        self.timed_out = False
        self.counted = True

    async def run(self):
        response = self.response
        try:
            await self.server.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self.timed_out:
                self.error("the request's task was cancelled")
        except OSError:
            if not self.client_left:
                self.error(None)
        except BaseException:
            self.error(None)
        else:
            if not response.started:
                self.error("the app returned without sending http.response.start")
            elif not response.complete:
                self.error("the app returned before its response was complete")
        finally:
            if not response.complete and response.fail():
                self.server.schedule_flush()
            self.complete()
            if self.file is not None:
                self.file.close()
            self.server.done(self.id)

    def complete(self):
        """The response ended: ``http.disconnect`` from now on, and its place is free."""
        self.client_gone()
        if self.counted:
            self.counted = False
            self.server.released()

    def error(self, message):
        line = request_line(self.scope)
        log("Error handling request %s%s" % (line, ": " + message if message else ""))
        if message is None:
            traceback.print_exc()
        flush_stderr()

    async def receive(self):
        if not self.body_sent:
            if self.body_file is None:
                self.body_sent = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            if self.file is None:
                self.file = open(self.body_file, "rb")
            data = self.file.read(BODY_CHUNK)
            more = len(data) == BODY_CHUNK and self.file.peek(1) != b""
            if not more:
                self.body_sent = True
            return {"type": "http.request", "body": data, "more_body": more}
        # The body is all read: the next event is the disconnect, once the response is
        # complete or the client left.
        if not self.gone:
            if self.waiter is None:
                self.waiter = self.server.loop.create_future()
            await self.waiter
        return {"type": "http.disconnect"}

    async def send(self, message):
        kind = message["type"]
        response = self.response
        if self.client_left:
            # ASGI 2.4: sending on a closed connection raises an OSError.
            raise OSError("the client went away")
        if kind == "http.response.body":
            if response.body(message.get("body", b""), message.get("more_body", False)):
                self.server.schedule_flush()
            if response.complete:
                self.complete()
        elif kind == "http.response.start":
            response.start(message["status"], message.get("headers", ()), bool(message.get("trailers")))
        elif kind == "http.response.trailers":
            if response.trailers(message.get("headers", ()), message.get("more_trailers", False)):
                self.server.schedule_flush()
            if response.complete:
                self.complete()
        elif kind == "http.response.pathsend":
            response.pathsend(os.fspath(message["path"]))
            self.complete()
        else:
            raise RuntimeError("unexpected ASGI message %r in an HTTP request" % (kind,))

    def client_gone(self):
        """The response is complete, or the client left: ``http.disconnect`` from now on."""
        self.gone = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def time_out(self):
        """Past ``--timeout`` (the front answered 504): send the task's stack, cancel it."""
        self.timed_out = True
        try:
            text = task_stack(self.task)
        except Exception as e:  # the stack is for the log; never fail the cancel on it
            text = "(stack unavailable: %r)\n" % (e,)
        self.server.channel.stack(self.id, text)
        self.task.cancel()


class ClientGone(OSError):
    """``send`` on a WebSocket whose client closed or went away (ASGI 2.4 asks servers to
    raise a subclass of ``OSError``)."""


class SocketCycle:
    """One WebSocket: the handshake held by the front until the app answers it, then the
    client's messages as ``websocket.receive`` events and the app's as frames. Once the
    handshake is answered the socket no longer takes one of ``concurrency``'s places: an
    open socket mostly waits, and its messages never queue behind other requests."""

    __slots__ = (
        "server", "id", "scope", "socket", "task", "events", "waiter", "disconnected",
        "counted", "timed_out", "client_left",
    )

    def __init__(self, server, id, scope, socket):
        self.server = server
        self.id = id
        self.scope = scope
        self.socket = socket
        self.task = None
        self.events = collections.deque([{"type": "websocket.connect"}])
        self.waiter = None
        self.disconnected = False
        self.counted = True
        self.timed_out = False
        self.client_left = False

    async def run(self):
        ok = False
        try:
            await self.server.app(self.scope, self.receive, self.send)
            ok = True
        except asyncio.CancelledError:
            if not self.timed_out:
                self.error("the WebSocket's task was cancelled")
        except ClientGone:
            ok = True  # the app sent to a socket its client had closed: nothing to report
        except BaseException:
            self.error(None)
        else:
            if not self.socket.answered:
                self.error("the app returned without accepting or closing the WebSocket")
        finally:
            if self.socket.end(ok):
                self.server.schedule_flush()
            self.release()
            self.server.done(self.id)

    def release(self):
        if self.counted:
            self.counted = False
            self.server.released()

    def error(self, message):
        line = request_line(self.scope)
        log("Error handling WebSocket %s%s" % (line, ": " + message if message else ""))
        if message is None:
            traceback.print_exc()
        flush_stderr()

    async def receive(self):
        while not self.events:
            if self.waiter is None or self.waiter.done():
                self.waiter = self.server.loop.create_future()
            await self.waiter
        event = self.events[0]
        # The disconnect stays: every later receive gets it again.
        if event["type"] != "websocket.disconnect":
            self.events.popleft()
        return event

    def deliver(self, event):
        if self.disconnected:
            return
        if event["type"] == "websocket.disconnect":
            self.disconnected = True
        self.events.append(event)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def client_gone(self):
        """The client left before the handshake was answered."""
        self.deliver({"type": "websocket.disconnect", "code": 1006, "reason": ""})

    async def send(self, message):
        kind = message["type"]
        socket = self.socket
        if kind == "websocket.send":
            if self.disconnected:
                raise ClientGone("the WebSocket's client closed it")
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
            if data is None:
                raise TypeError("websocket.send needs `text` or `bytes`")
            flush = socket.send(data)
        elif kind == "websocket.accept":
            flush = socket.accept(message.get("subprotocol"), message.get("headers") or ())
            self.release()
        elif kind == "websocket.close":
            if self.disconnected:
                return  # already closed by the client: nothing to send it
            reason = message.get("reason") or ""
            flush = socket.close(message.get("code", 1000), reason)
            self.release()
        elif kind == "websocket.http.response.start":
            socket.http_start(message["status"], message.get("headers", ()))
            flush = False
        elif kind == "websocket.http.response.body":
            flush = socket.http_body(message.get("body", b""), message.get("more_body", False))
            if not message.get("more_body", False):
                self.release()
        else:
            raise RuntimeError("unexpected ASGI message %r on a WebSocket" % (kind,))
        if flush:
            self.server.schedule_flush()

    def time_out(self):
        """The handshake was not answered within ``--timeout`` (the front answered 504)."""
        Cycle.time_out(self)


def task_stack(task):
    """The frames a suspended task waits in, outermost first: the chain of coroutines
    each awaits (``Task.print_stack`` shows only the outermost one)."""
    frames = []
    coro = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append((frame, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "".join(traceback.StackSummary.extract(frames).format())
