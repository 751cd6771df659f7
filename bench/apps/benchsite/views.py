import random

from django.http import JsonResponse

from .models import Item

ITEM_ROWS = 10_000


def json_view(request):
    return JsonResponse({"message": "Hello, World!", "path": request.path})


async def async_json_view(request):
    return JsonResponse({"message": "Hello, World!", "path": request.path})


def db_view(request):
    item = Item.objects.get(id=random.randint(1, ITEM_ROWS))
    return JsonResponse({"id": item.id, "name": item.name, "price": item.price})
