from django.core.validators import MinValueValidator, RegexValidator
from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=200)
    born = models.DateField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    title = models.CharField(max_length=300)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    isbn = models.CharField(
        max_length=13,
        unique=True,
        null=True,
        blank=True,
        validators=[RegexValidator(r"^\d{13}$", "An ISBN has exactly 13 digits.")],
    )
    pages = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    published = models.DateField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["title"])]

    def __str__(self) -> str:
        return self.title
