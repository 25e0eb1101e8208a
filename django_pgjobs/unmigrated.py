"""A database pgjobs can't use: without its tables (``migrate`` not run), or not
reachable at all; the error naming the fix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.core.management.base import CommandError
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from . import outage

#: SQLSTATEs of a missing table, function or column: what a query of pgjobs meets on
#: a database whose pgjobs migrations are not (all) applied.
UNDEFINED = frozenset({"42P01", "42883", "42703"})


def pending(alias: str) -> list[str]:
    """pgjobs' migrations not applied to the database ``alias``, in order."""
    connection = connections[alias]
    if not connection.in_atomic_block:
        return _pending_on(connection)
    # The error being explained aborted the caller's transaction (an enqueue in an
    # atomic block): django_migrations can only be read on a connection of our own.
    own = connections.create_connection(alias)
    try:
        return _pending_on(own)
    finally:
        own.close()


def _pending_on(connection: BaseDatabaseWrapper) -> list[str]:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    targets = [node for node in executor.loader.graph.leaf_nodes() if node[0] == "pgjobs"]
    return [migration.name for migration, _ in executor.migration_plan(targets)]


def listed(names: list[str]) -> str:
    """The first two of ``names`` and an ellipsis: on a database never migrated, all
    of them made a line of two dozen names."""
    return ", ".join(names[:2]) + (", ..." if len(names) > 2 else "")


def undefined(error: BaseException) -> bool:
    """Whether ``error`` (or the driver's error Django wrapped in it) is a missing
    table, function or column: what pgjobs' queries meet before ``migrate``."""
    cause = error if getattr(error, "sqlstate", None) else error.__cause__
    return getattr(cause, "sqlstate", None) in UNDEFINED


def explain(error: BaseException, alias: str) -> str | None:
    """What to do about ``error`` if pgjobs' migrations missing from ``alias`` caused
    it; None for any other error."""
    if not undefined(error):
        return None
    # Only now, on the way out: reading the migration graph costs a start-up time.
    try:
        names = pending(alias)
    except Exception:  # an unusable connection, a broken migration graph: then
        return None  # the database's own error says more than a guess
    if not names:
        return None
    database = connections[alias].settings_dict.get("NAME")
    flag = "" if alias == "default" else f" --database {alias}"
    return (
        f"The database {database!r} lacks pgjobs' tables, or their latest changes: "
        f"{len(names)} migration(s) of pgjobs are not applied ({listed(names)}). "
        f"Run `python manage.py migrate{flag}` first."
    )


def unreachable(error: BaseException, alias: str) -> str | None:
    """What to check if ``error`` is a connection to ``alias`` that could not be made
    (no server there, no such database, a password refused); None for any other error."""
    if not outage.is_refused(error):
        return None
    said = outage.describe(error)
    for prefix in outage.CONNECT_FAILED:
        said = said.removeprefix(prefix)
    return (
        f"Can't connect to database {alias!r}: {said}. Check DATABASES[{alias!r}] (NAME, "
        "HOST, PORT, USER, PASSWORD), that PostgreSQL runs there and that the database exists."
    )


@contextlib.contextmanager
def required(alias: str) -> Iterator[None]:
    """Turn a database error of unapplied pgjobs migrations, or a connection that could
    not be made, into a ``CommandError`` saying what to do (a message, not a traceback
    of a hundred lines); others pass through."""
    try:
        yield
    except DatabaseError as error:
        if (message := explain(error, alias) or unreachable(error, alias)) is None:
            raise
        raise CommandError(message) from error


def reworded(error: DatabaseError, alias: str) -> DatabaseError | None:
    """``error`` of the same class with a message saying to migrate, if pgjobs'
    migrations missing from ``alias`` caused it; None for any other error. (An
    enqueue said 'function pgjobs_insert_job(unknown, ...) does not exist', with
    PostgreSQL's hint to add type casts.)"""
    if (message := explain(error, alias)) is None:
        return None
    said = str(error).splitlines()[0] if str(error) else type(error).__name__
    return type(error)(f"{message} (PostgreSQL said: {said})")
