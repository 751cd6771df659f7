"""A plain ASGI 3 app for porch's WebSocket tests: one path per behaviour.

HTTP ``GET /closes`` answers the ``websocket.disconnect`` events this worker saw, as
JSON, so tests can check what the app heard.
"""

import asyncio
import json
import os

closes = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        body = json.dumps({"closes": closes, "pid": os.getpid()}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    assert scope["type"] == "websocket"
    path = scope["path"]
    handler = ROUTES.get(path.strip("/").split("/")[0], echo)
    await handler(scope, receive, send)


async def connect(receive):
    message = await receive()
    assert message["type"] == "websocket.connect", message


async def until_disconnect(receive, on_message=None):
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            closes.append({"path": "?", "code": message["code"], "reason": message.get("reason", "")})
            return message
        if on_message is not None:
            await on_message(message)


async def echo(scope, receive, send):
    await connect(receive)
    await send({"type": "websocket.accept"})

    async def back(message):
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})

    message = await until_disconnect(receive, back)
    closes[-1]["path"] = scope["path"]
    return message


async def scope_info(scope, receive, send):
    await connect(receive)
    await send({"type": "websocket.accept"})
    info = {k: v for k, v in scope.items() if k in (
        "type", "asgi", "http_version", "scheme", "path", "raw_path", "query_string",
        "root_path", "subprotocols", "client", "server", "extensions")}
    info["raw_path"] = info["raw_path"].decode("latin-1")
    info["query_string"] = info["query_string"].decode("latin-1")
    info["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    info["has_method"] = "method" in scope
    await send({"type": "websocket.send", "text": json.dumps(info)})
    await until_disconnect(receive)


async def subprotocol(scope, receive, send):
    await connect(receive)
    chosen = scope["subprotocols"][-1] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": chosen,
                "headers": [(b"set-cookie", b"session=abc")]})
    await send({"type": "websocket.send", "text": "chose %s" % chosen})
    await until_disconnect(receive)


async def deny(scope, receive, send):
    await connect(receive)
    await send({"type": "websocket.close", "code": 1008})


async def deny_http(scope, receive, send):
    await connect(receive)
    await send({"type": "websocket.http.response.start", "status": 418,
                "headers": [(b"content-type", b"text/plain"), (b"x-why", b"teapot")]})
    await send({"type": "websocket.http.response.body", "body": b"short ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"and stout"})


async def app_closes(scope, receive, send):
    await connect(receive)
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "bye"})
    await send({"type": "websocket.close", "code": 4001, "reason": "custom reason"})
    await until_disconnect(receive)
    closes[-1]["path"] = scope["path"]


async def raise_before(scope, receive, send):
    await connect(receive)
    raise RuntimeError("failed before accepting")


async def raise_after(scope, receive, send):
    await connect(receive)
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "about to fail"})
    raise RuntimeError("failed while open")


async def return_open(scope, receive, send):
    await connect(receive)
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "done"})


async def no_answer(scope, receive, send):
    await connect(receive)


async def send_after_close(scope, receive, send):
    """Sends until the client's close makes ``send`` raise (an OSError, ASGI 2.4)."""
    await connect(receive)
    await send({"type": "websocket.accept"})
    await until_disconnect(receive)
    try:
        await send({"type": "websocket.send", "text": "too late"})
    except OSError as e:
        closes.append({"path": scope["path"], "code": -1, "reason": type(e).__name__})


async def stream(scope, receive, send):
    """Sends ``n`` numbered messages as fast as the loop goes, then waits."""
    await connect(receive)
    await send({"type": "websocket.accept"})
    n = int(scope["query_string"].decode().split("=")[1])
    for i in range(n):
        await send({"type": "websocket.send", "text": str(i)})
    await until_disconnect(receive)


async def slow_accept(scope, receive, send):
    await connect(receive)
    await asyncio.sleep(3600)


ROUTES = {
    "echo": echo,
    "scope": scope_info,
    "subprotocol": subprotocol,
    "deny": deny,
    "deny-http": deny_http,
    "app-closes": app_closes,
    "raise-before": raise_before,
    "raise-after": raise_after,
    "return-open": return_open,
    "no-answer": no_answer,
    "send-after-close": send_after_close,
    "stream": stream,
    "slow-accept": slow_accept,
}
