"""``manage.py migrate`` that is safe when several replicas start at once.

Every container runs migrations on start (entrypoint.sh). On PostgreSQL the replicas take
turns through a session-level advisory lock, so two of them never apply the same migration
concurrently; the ones that come later find nothing left to do.
"""

from django.core.management.commands.migrate import Command as MigrateCommand
from django.db import connections

# Any constant shared by all replicas; this one spells "porch".
MIGRATION_LOCK = 0x706F726368


class Command(MigrateCommand):
    help = MigrateCommand.help + " On PostgreSQL, concurrent runs take turns."

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            return super().handle(*args, **options)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        try:
            return super().handle(*args, **options)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])
