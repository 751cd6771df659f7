import hashlib
import json

from django.http import JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt


def hello(request):
    return JsonResponse(
        {
            "message": "hello from django",
            "path": request.path,
            "path_info": request.path_info,
            "reverse": reverse("hello"),
            "absolute": request.build_absolute_uri(),
            "query": request.GET.dict(),
        }
    )


@csrf_exempt
def echo(request):
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    body = request.body
    parsed = None
    if request.content_type == "application/json" and body:
        parsed = json.loads(body)
    return JsonResponse(
        {
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "content_type": request.content_type,
            "content_length": request.META.get("CONTENT_LENGTH"),
            "json": parsed,
            "post": request.POST.dict() if request.content_type.startswith("application/x-www-form") else None,
        }
    )


async def async_hello(request):
    """An async view: under ASGI it runs in the worker's event loop."""
    import asyncio

    await asyncio.sleep(0)
    return JsonResponse({"message": "hello from an async django view", "path": request.path,
                         "query": request.GET.dict(), "method": request.method})
