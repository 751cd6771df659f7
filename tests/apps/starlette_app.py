"""A small Starlette app: routes, JSON, form data, an SSE-like stream, mounted paths."""

import asyncio

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute


async def hello(request):
    return JSONResponse({"path": request.url.path, "root_path": request.scope.get("root_path"),
                         "query": dict(request.query_params), "client": request.client.host})


async def form(request):
    data = await request.form()
    return JSONResponse({k: v for k, v in data.items()})


async def events(request):
    async def gen():
        for i in range(3):
            yield f"data: {i}\n\n"
            await asyncio.sleep(0)
    return StreamingResponse(gen(), media_type="text/event-stream")


async def sub(request):
    return PlainTextResponse("sub " + request.url.path)


async def ws_sum(websocket):
    """Adds up the numbers a client sends; says the total when it sends "done"."""
    await websocket.accept(subprotocol="sum.v1" if "sum.v1" in websocket.scope["subprotocols"] else None)
    total = 0
    async for message in websocket.iter_text():
        if message == "done":
            await websocket.send_json({"total": total})
            await websocket.close(code=4000, reason="summed")
            return
        total += int(message)


app = Starlette(routes=[
    WebSocketRoute("/ws/sum", ws_sum),
    Route("/hello", hello),
    Route("/form", form, methods=["POST"]),
    Route("/events", events),
    Mount("/sub", routes=[Route("/x", sub)]),
])
