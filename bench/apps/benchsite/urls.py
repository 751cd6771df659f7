from django.urls import path

from . import views

urlpatterns = [
    path("json", views.json_view),
    path("async-json", views.async_json_view),
    path("db", views.db_view),
]
