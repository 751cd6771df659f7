"""A plain ASGI 3 app for porch's ASGI worker tests: one route per behaviour."""

import asyncio
import hashlib
import json
import os
import time

released = None  # an asyncio.Event, made in the worker's loop at startup
log = []


async def read_body(receive):
    body = b""
    events = 0
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        events += 1
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body, events


async def respond(send, status, data, headers=()):
    body = json.dumps(data).encode() if not isinstance(data, bytes) else data
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), *headers],
    })
    await send({"type": "http.response.body", "body": body})


async def lifespan(scope, receive, send):
    global released
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            released = asyncio.Event()
            scope["state"]["started_by"] = os.getpid()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            path = os.environ.get("ASGI_SHUTDOWN_FILE")
            if path:
                with open(path, "a") as f:
                    f.write("shutdown %d\n" % os.getpid())
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    path = scope["path"]
    if scope["root_path"] and path.startswith(scope["root_path"]):
        path = path[len(scope["root_path"]):]  # as frameworks route: below the mount
    if path.startswith("/scope"):
        body, events = await read_body(receive)
        data = {k: v for k, v in scope.items() if k not in ("headers", "state", "extensions")}
        data = {k: (v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in data.items()}
        data["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        data["state"] = scope.get("state")
        data["body_sha256"] = hashlib.sha256(body).hexdigest()
        data["body_len"] = len(body)
        data["body_events"] = events
        data["pid"] = os.getpid()
        module = type(asyncio.get_running_loop()).__module__
        data["loop"] = "uvloop" if module.startswith("uvloop") else "asyncio"
        return await respond(send, 200, data)
    if path == "/pid":
        return await respond(send, 200, {"pid": os.getpid()})
    if path == "/trailers":
        # The body's checksum in a trailer (as gRPC-web and checksumming uploads do).
        assert "http.response.trailers" in scope["extensions"]
        body = b"hello trailers"
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum, x-more")]})
        await send({"type": "http.response.body", "body": body})
        await send({"type": "http.response.trailers", "more_trailers": True,
                    "headers": [(b"x-checksum", hashlib.sha256(body).hexdigest().encode())]})
        await send({"type": "http.response.trailers", "headers": [(b"x-more", b"1")]})
        return
    if path == "/sleep":
        seconds = float(scope["query_string"].decode() or "1")
        await asyncio.sleep(seconds)
        return await respond(send, 200, {"slept": seconds, "pid": os.getpid()})
    if path == "/sse":
        # The first event leaves at once; the rest waits until /release is called, so a
        # client that reads the first event before calling /release proves streaming.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        await released.wait()
        released.clear()
        await send({"type": "http.response.body", "body": b"data: second\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/ticks":
        # A piece every 0.4 s for a while: a stream that keeps sending outlives --timeout.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(int(scope["query_string"].decode() or "5")):
            await asyncio.sleep(0.4)
            await send({"type": "http.response.body", "body": b"tick %d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/respond-then-work":
        # Background work after the response (as BackgroundTasks do): it waits for
        # /release, which must be served meanwhile even with --asgi-concurrency 1.
        await respond(send, 200, {"responded": True})
        await released.wait()
        released.clear()
        log.append("background work done")
        return
    if path == "/release":
        released.set()
        return await respond(send, 200, {"released": True})
    if path == "/stream-forever":
        # Ignores http.disconnect: keeps sending until sending fails (the client left).
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
                await asyncio.sleep(0.01)
        except OSError:
            log.append("stream-forever: client left")
            raise
    if path == "/long-poll":
        # Sends nothing until the client leaves (the front tells: http.disconnect).
        await read_body(receive)
        log.append("long-poll: waiting")
        message = await receive()
        log.append("long-poll: %s" % message["type"])
        return
    if path == "/log":
        return await respond(send, 200, {"log": log})
    if path == "/block":
        time.sleep(float(scope["query_string"].decode() or "60"))  # blocks the loop
        return await respond(send, 200, {"blocked": True})
    if path == "/raise":
        raise ValueError("boom before start")
    if path == "/raise-after-body":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom after body")
    if path == "/no-response":
        return
    if path == "/body-before-start":
        await send({"type": "http.response.body", "body": b"oops"})
        return
    if path == "/send-after-complete":
        await respond(send, 200, {"ok": True})
        try:
            await send({"type": "http.response.body", "body": b"more"})
        except RuntimeError as e:
            log.append("send-after-complete: %s" % e)
        return
    if path == "/disconnect-after-response":
        await read_body(receive)
        await respond(send, 200, {"ok": True})
        message = await receive()
        log.append("after response: %s" % message["type"])
        return
    if path == "/pathsend":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.pathsend", "path": __file__})
        return
    if path == "/headers":
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"x-one", b"1"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]})
        await send({"type": "http.response.body", "body": b"made"})
        return
    return await respond(send, 404, {"error": "not found", "path": path})
