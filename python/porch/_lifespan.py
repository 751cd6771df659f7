"""The ASGI lifespan protocol for porch's ASGI worker.

``lifespan.startup`` runs before the worker tells the front it is ready, so a worker
never takes a request before the app's startup code finished; a failed startup is a
failed boot (the worker exits with status 3 and the app's message, like an import
error). ``lifespan.shutdown`` runs when the worker retires or porch stops. An app that
does not support lifespan (it raises or returns on the lifespan scope, as Django does)
simply runs without.
"""

import asyncio
import os
import sys
import traceback


def _log(level, message):
    sys.stderr.write("[porch] [%s] [pid %d] %s\n" % (level, os.getpid(), message))
    sys.stderr.flush()


class Lifespan:
    def __init__(self, app):
        self.app = app
        #: Shared into every request's scope (``scope["state"]``), copied shallowly;
        #: ``None`` when the app does not support lifespan.
        self.state = {}
        self.task = None
        self.to_app = None
        self.from_app = None
        self.started = False

    async def startup(self):
        """True when the worker may take requests."""
        self.to_app = asyncio.Queue()
        self.from_app = asyncio.Queue()
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        self.task = asyncio.get_running_loop().create_task(self.main(scope))
        self.to_app.put_nowait({"type": "lifespan.startup"})
        message = await self.from_app.get()
        if message is None:
            # The app raised or returned without answering: no lifespan support.
            self.state = None
            return True
        if message["type"] == "lifespan.startup.complete":
            self.started = True
            return True
        _log(
            "ERROR",
            "Application startup failed: %s" % (message.get("message") or "(no message)"),
        )
        return False

    async def shutdown(self):
        if not self.started or self.task.done():
            return
        self.to_app.put_nowait({"type": "lifespan.shutdown"})
        message = await self.from_app.get()
        if message is not None and message["type"] == "lifespan.shutdown.failed":
            _log(
                "ERROR",
                "Application shutdown failed: %s" % (message.get("message") or "(no message)"),
            )

    async def main(self, scope):
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException:
            if self.started:
                _log("ERROR", "Exception in the app's lifespan:")
                traceback.print_exc()
                sys.stderr.flush()
            else:
                # Expected of apps without lifespan support; kept for debugging.
                _log("INFO", "the app does not support the ASGI lifespan protocol")
        finally:
            self.from_app.put_nowait(None)

    async def receive(self):
        return await self.to_app.get()

    async def send(self, message):
        kind = message["type"]
        if kind not in (
            "lifespan.startup.complete",
            "lifespan.startup.failed",
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
        ):
            raise RuntimeError("unexpected ASGI lifespan message %r" % (kind,))
        self.from_app.put_nowait(message)
