"""An ASGI app whose lifespan startup fails: porch must not start."""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "the database is unreachable"})
        return
    raise AssertionError("no request may reach an app whose startup failed")
