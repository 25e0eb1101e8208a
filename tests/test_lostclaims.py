"""lostclaims.py on real backends: which backend serves a connection, and ending the
one a lost connection left running, and no other (tests/test_liveness.py loses a
worker's claim this way end to end)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from django_pgjobs import db, lostclaims

pytestmark = pytest.mark.django_db(transaction=True)

BEHIND_PGBOUNCER = "DIRECT_DATABASE_URL" in os.environ
direct_only = pytest.mark.skipif(BEHIND_PGBOUNCER, reason="behind PgBouncer none is ours to end")


def direct() -> psycopg.Connection:
    """A connection straight to the server (behind PgBouncer, the LISTEN one's)."""
    return psycopg.connect(
        **db.connection_params("listen" if BEHIND_PGBOUNCER else None), autocommit=True
    )


@pytest.fixture
def busy() -> Iterator[tuple[lostclaims.Backend, threading.Thread]]:
    """A backend of another connection, running a statement (a minute's sleep)."""
    conn = direct()
    pid, started = conn.execute(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    ).fetchone()
    thread = threading.Thread(target=_sleep, args=(conn,), daemon=True)
    thread.start()
    yield lostclaims.Backend(pid, started), thread
    conn.cancel()  # its sleep, if still on
    thread.join(10)
    conn.close()


def _sleep(conn: psycopg.Connection) -> None:
    with contextlib.suppress(psycopg.Error):  # ended by the test
        conn.execute("SELECT pg_sleep(60)")


def alive(backend: lostclaims.Backend) -> bool:
    with direct() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)", [backend.pid]
        ).fetchone()
    return row[0]


@direct_only
def test_the_backend_serving_a_direct_connection_is_its_own():
    backend = lostclaims.serving("default")
    assert backend is not None and not backend.pooled
    from django.db import connection

    assert backend.pid == connection.connection.info.backend_pid


@direct_only
def test_a_backend_still_running_is_ended_and_waited_for(busy, wait):
    backend, thread = busy
    wait(lambda: alive(backend))
    assert lostclaims.end(backend, "default")
    assert not alive(backend)
    thread.join(10)
    assert not thread.is_alive()
    assert lostclaims.end(backend, "default")  # gone: nothing to do


def test_a_backend_with_the_same_pid_but_another_start_is_left_alone(busy, wait):
    """A pid alone may be another backend's by the time the worker reconnects."""
    backend, thread = busy
    other = lostclaims.Backend(backend.pid, backend.started - timedelta(microseconds=1))
    assert lostclaims.end(other, "default")  # the one it names is gone
    assert alive(backend) and thread.is_alive()


def test_behind_a_pooler_nothing_is_ended(busy):
    backend, thread = busy
    pooled = lostclaims.Backend(backend.pid, backend.started, pooled=True)
    assert not lostclaims.end(pooled, "default")
    assert alive(backend) and thread.is_alive()
