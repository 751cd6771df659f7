"""FastAPI JSON: a typical small API endpoint (routing, a response model, JSON)."""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Message(BaseModel):
    message: str
    path: str


@app.get("/json", response_model=Message)
async def json_view() -> Message:
    return Message(message="Hello, World!", path="/json")
