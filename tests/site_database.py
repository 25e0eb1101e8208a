"""A site's own SQL on the job table, as the worker's and the scheduler's loops meet it:
its triggers refusing a statement, a real statement timeout, and the outage warnings
none of them may cause."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from django.db import connection, connections

from django_pgjobs import db


def trigger_sql(
    name: str, body: str, *, event: str = "UPDATE", declare: str = ""
) -> tuple[str, str]:
    """A site's plpgsql trigger ``name`` on pgjobs_job, run BEFORE ``event`` for each row:
    ``body`` (its ``declare`` section's variables first), then RETURN NEW. What makes
    it and what drops it, for ``site_sql``."""
    declared = f"DECLARE\n{declare}\n" if declare else ""
    create = f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
{declared}BEGIN
{body}
    RETURN NEW;
END $$;
CREATE TRIGGER {name} BEFORE {event} ON pgjobs_job
    FOR EACH ROW EXECUTE FUNCTION {name}();
"""
    drop = f"""
DROP TRIGGER IF EXISTS {name} ON pgjobs_job;
DROP FUNCTION IF EXISTS {name}();
"""
    return create, drop


@pytest.fixture
def site_sql() -> Iterator[Callable[[str, str], Callable[[], None]]]:
    """``site_sql(create, drop)`` runs ``create`` (a site's trigger, a table it reads)
    on the default database now and ``drop`` at the test's end, the last made first;
    it gives what runs ``drop`` sooner. For tests whose database is really written
    (``django_db(transaction=True)``)."""
    drops: list[str] = []

    def run(sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    def install(create: str, drop: str) -> Callable[[], None]:
        run(create)
        drops.append(drop)
        return lambda: run(drop)

    yield install
    for drop in reversed(drops):
        run(drop)


def time_out(using: str = "default") -> None:
    """A real statement timeout (query_canceled, an OperationalError) on ``using``."""
    with db.local_settings(using, statement_timeout="10ms"), connections[using].cursor() as c:
        c.execute("SELECT pg_sleep(1)")


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What was said of an outage, at WARNING or above."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "django_pgjobs.outage" and r.levelno >= logging.WARNING
    ]
