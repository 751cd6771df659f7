from django.contrib import admin

from .models import Author, Book


class BookInline(admin.TabularInline):
    model = Book
    extra = 0
    fields = ["title", "isbn", "pages", "published"]


@admin.register(Author)
class AuthorAdmin(admin.ModelAdmin):
    list_display = ["name", "born", "created"]
    search_fields = ["name"]
    inlines = [BookInline]


@admin.register(Book)
class BookAdmin(admin.ModelAdmin):
    list_display = ["title", "author", "isbn", "pages", "published"]
    list_filter = ["published"]
    search_fields = ["title", "isbn", "author__name"]
    list_select_related = ["author"]
    autocomplete_fields = ["author"]
