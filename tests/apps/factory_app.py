"""An app built by a factory: ``porch factory_app:create_app()``.

The module has no ``application`` attribute, so only the factory form can serve it.
"""

import os

CALLS = []


def create_app():
    CALLS.append(os.getpid())

    def app(environ, start_response):
        body = f"made by create_app (called {len(CALLS)} time(s) in pid {os.getpid()})".encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


def configured(name, greeting="hello"):
    """``factory_app:configured("prod", greeting="hi")``: a factory with literal arguments."""

    def app(environ, start_response):
        body = f"{greeting} from {name}".encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return app


class AsgiApp:
    """An ASGI app (async __call__), as FastAPI's and Starlette's are."""

    async def __call__(self, scope, receive, send):
        pass


asgi = AsgiApp()
