from django.urls import path

from . import views

urlpatterns = [
    path("api/hello/", views.hello, name="hello"),
    path("api/echo/", views.echo, name="echo"),
    path("api/async/", views.async_hello, name="async_hello"),
]
