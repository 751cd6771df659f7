from django.db.models import Count
from rest_framework import viewsets
from rest_framework.exceptions import ValidationError

from .models import Author, Book
from .serializers import AuthorSerializer, BookSerializer


def int_param(request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError({name: [f"Expected an integer id, got {value!r}."]}) from None


class AuthorViewSet(viewsets.ModelViewSet):
    """Authors. Filter with ``?search=`` (name contains, case-insensitive)."""

    serializer_class = AuthorSerializer

    def get_queryset(self):
        # Aggregating queries ignore Meta.ordering: order explicitly for stable pages.
        queryset = Author.objects.annotate(book_count=Count("books")).order_by("name", "id")
        search = self.request.query_params.get("search")
        if search:
            queryset = queryset.filter(name__icontains=search)
        return queryset


class BookViewSet(viewsets.ModelViewSet):
    """Books. Filter with ``?author=<id>`` and ``?search=`` (title contains, case-insensitive)."""

    serializer_class = BookSerializer

    def get_queryset(self):
        queryset = Book.objects.select_related("author")
        author = int_param(self.request, "author")
        if author is not None:
            queryset = queryset.filter(author_id=author)
        search = self.request.query_params.get("search")
        if search:
            queryset = queryset.filter(title__icontains=search)
        return queryset
