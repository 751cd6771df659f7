"""A Django Channels site in one module: an echo consumer and a chat room that
broadcasts through the in-memory channel layer, beside Django's HTTP views.

Run as ``channels_app:application``.
"""

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="porch-tests",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    DATABASES={},
    USE_TZ=True,
)
django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


async def hello(request):
    return JsonResponse({"hello": "http"})


urlpatterns = [path("hello", hello)]


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            await self.send(text_data="echo: " + text_data)
        else:
            await self.send(bytes_data=bytes_data[::-1])


class Room(AsyncJsonWebsocketConsumer):
    """Everyone in a room hears what anyone says in it."""

    async def connect(self):
        self.room = "room-" + self.scope["url_route"]["kwargs"]["name"]
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()
        await self.send_json({"joined": self.room})

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.room, self.channel_name)

    async def receive_json(self, content):
        await self.channel_layer.group_send(
            self.room, {"type": "chat.message", "text": content["text"]}
        )

    async def chat_message(self, event):
        await self.send_json({"said": event["text"]})


class Private(AsyncWebsocketConsumer):
    async def connect(self):
        await self.close()  # refused before accepting: the client gets 403


application = ProtocolTypeRouter({
    "http": get_asgi_application(),
    "websocket": URLRouter([
        path("ws/echo", Echo.as_asgi()),
        path("ws/room/<name>", Room.as_asgi()),
        path("ws/private", Private.as_asgi()),
    ]),
})
