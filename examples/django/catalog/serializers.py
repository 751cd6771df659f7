from rest_framework import serializers

from .models import Author, Book


class AuthorSerializer(serializers.ModelSerializer):
    book_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Author
        fields = ["id", "name", "born", "book_count", "created"]
        read_only_fields = ["id", "created"]

    def validate_name(self, value: str) -> str:
        value = value.strip()
        if not value:
            raise serializers.ValidationError("This field may not be blank.")
        return value


class BookSerializer(serializers.ModelSerializer):
    author_name = serializers.CharField(source="author.name", read_only=True)

    class Meta:
        model = Book
        fields = ["id", "title", "author", "author_name", "isbn", "pages", "published", "created"]
        read_only_fields = ["id", "created"]

    def validate_isbn(self, value: str | None) -> str | None:
        # An empty ISBN means "unknown" (NULL), so that it never collides with another.
        return value or None
