"""The one module that runs the hand-written SQL in ``sql/``.

Each file holds one statement with named parameters. Everything else in the
project uses the ORM.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from django.db import connections

from . import conf

SQL_DIR = Path(__file__).resolve().parent / "sql"


@functools.cache
def statement(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def alias() -> str:
    return conf.get("DATABASE")


def fetch_dicts(name: str, params: dict[str, Any], using: str | None = None) -> list[dict]:
    with connections[using or alias()].cursor() as cursor:
        cursor.execute(statement(name), params)
        columns = [col.name for col in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def fetch_jobs(name: str, params: dict[str, Any], using: str | None = None) -> list:
    """Run a statement that returns job rows, as Job instances (JSON fields decoded)."""
    from .models import Job

    return list(Job.objects.raw(statement(name), params, using=using or alias()))


def connection_params(using: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` to the jobs database."""
    params = dict(connections[using or alias()].get_connection_params())
    for internal in ("cursor_factory", "context", "server_side_binding", "prepare_threshold"):
        params.pop(internal, None)
    return params


def execute(name: str, params: dict[str, Any], using: str | None = None) -> int:
    """Run a statement that returns no rows; returns the number of rows it touched."""
    with connections[using or alias()].cursor() as cursor:
        cursor.execute(statement(name), params)
        return cursor.rowcount


def notify(channel: str, payload: str, using: str | None = None) -> None:
    """pg_notify in the current transaction: delivered on commit, dropped on rollback."""
    execute("notify", {"channel": channel, "payload": payload}, using)
