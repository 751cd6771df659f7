from django.db import models


class Item(models.Model):
    """A row of the table bench/run creates and fills (ITEM_ROWS rows)."""

    name = models.CharField(max_length=64)
    price = models.IntegerField()

    class Meta:
        managed = False
        db_table = "bench_item"
