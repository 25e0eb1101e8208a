"""pgjobs runs on PostgreSQL only: the test of a database alias, and the error naming the fix."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import connections

from . import conf

FIX = (
    "django-pgjobs needs PostgreSQL: set its ENGINE to 'django.db.backends.postgresql' "
    "(pip install 'psycopg[binary]') and NAME, HOST, USER to a PostgreSQL database, "
    "or point PGJOBS['DATABASE'] at a DATABASES alias that is PostgreSQL."
)


class PostgreSQLRequired(CommandError, ImproperlyConfigured):
    """A database pgjobs would use is not PostgreSQL.

    An ``ImproperlyConfigured`` for code that handles configuration errors, and a
    ``CommandError`` so that ``manage.py migrate`` prints the message without a
    traceback.
    """


def problem(alias: str) -> str | None:
    """What keeps pgjobs off the database ``alias``, with the fix; None if nothing does."""
    if alias not in connections.settings:
        return f"The database alias {alias!r} is not in DATABASES. {FIX}"
    connection = connections[alias]
    if connection.vendor == "postgresql":
        return None
    engine = connection.settings_dict.get("ENGINE", "")
    return f"DATABASES[{alias!r}] uses {engine!r}. {FIX}"


def require_postgresql(alias: str) -> None:
    """Refuse, before anything is written, to install pgjobs on a database that
    is not PostgreSQL, or while ``PGJOBS["DATABASE"]`` names one that is not."""
    configured = conf.get("DATABASE")
    problems = []
    if found := problem(alias):
        problems.append(f"Migrating the database {alias!r}: {found}")
    if configured != alias and (found := problem(configured)):
        problems.append(f"PGJOBS['DATABASE'] is {configured!r}: {found}")
    if problems:
        raise PostgreSQLRequired(" ".join(problems) + " No pgjobs migration was applied.")
