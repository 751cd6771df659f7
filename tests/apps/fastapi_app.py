"""A small FastAPI app: JSON, path parameters, uploads, streaming, background tasks and
lifespan state, run by porch unchanged."""

import asyncio
import contextlib
import hashlib
import os

from fastapi import BackgroundTasks, FastAPI, File, Form, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

done = []


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"booted_pid": os.getpid()}


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def item(item_id: int, q: str = ""):
    return {"item_id": item_id, "q": q}


@app.post("/json")
async def echo_json(payload: dict):
    return {"received": payload}


@app.post("/upload")
async def upload(file: UploadFile = File(...), note: str = Form("")):
    data = await file.read()
    return {"filename": file.filename, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "note": note}


@app.get("/stream")
async def stream():
    async def pieces():
        for i in range(5):
            yield f"piece {i}\n".encode()
            await asyncio.sleep(0)
    return StreamingResponse(pieces(), media_type="text/plain")


@app.post("/background")
async def background(tasks: BackgroundTasks, name: str = "x"):
    tasks.add_task(done.append, name)
    return {"queued": name}


@app.get("/background")
async def background_done():
    return {"done": done}


@app.get("/state")
async def state(request: Request):
    return {"booted_pid": request.state.booted_pid, "pid": os.getpid()}


@app.websocket("/ws/items/{item_id}")
async def item_socket(websocket: WebSocket, item_id: int, q: str = ""):
    """Path and query parameters reach a FastAPI WebSocket; JSON both ways."""
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_json()
            await websocket.send_json({"item_id": item_id, "q": q, "got": data})
    except WebSocketDisconnect as e:
        done.append("ws closed %d" % e.code)
