"""Behind PgBouncer in transaction mode: what breaks with session state, and the
settings that avoid it (docs/howto/pgbouncer.md). `./dev test` runs this file, and
the worker tests, through a real PgBouncer; the tests marked so need it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.db import DatabaseError, connection, connections, transaction

from django_pgjobs import db

behind_pgbouncer = pytest.mark.skipif(
    "DIRECT_DATABASE_URL" not in os.environ, reason="needs PgBouncer (./dev test runs it)"
)
direct_only = pytest.mark.skipif(
    "DIRECT_DATABASE_URL" in os.environ,
    reason="reads its session's prepared statements: behind PgBouncer other clients' share it",
)


def on_a_thread_of_its_own(work: Callable[[], Any]) -> Any:
    """``work()`` on a new thread (a new connection), as a web process's request runs."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except Exception as error:  # handed to the test
            outcome["error"] = error
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def on_a_worker_thread(work: Callable[[], Any]) -> Any:
    """``work()`` on a thread that prepares statements as a worker's threads do."""

    def prepared() -> Any:
        db.prepare_on_this_thread()
        return work()

    return on_a_thread_of_its_own(prepared)


def prepared_statements() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("threshold", [None, 5])
def test_a_worker_thread_prepares_only_if_the_connection_prepares_at_all(settings, threshold):
    """Django's default (prepare_threshold None) prepares nothing: fit for PgBouncer
    in transaction mode. Set in OPTIONS, the worker's threads prepare a few statements."""
    settings.DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = threshold

    def work() -> int:
        db.fetch_dicts("queue_configs", {"queues": ["default"]})
        with connection.cursor() as cursor:  # this thread's own connection
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            return cursor.fetchone()[0]

    try:
        assert on_a_worker_thread(work) == (0 if threshold is None else 1)
    finally:
        settings.DATABASES["default"]["OPTIONS"].pop("prepare_threshold")


@pytest.mark.django_db(transaction=True)
def test_a_prepared_statement_gone_from_the_session_is_an_error_that_says_why():
    def work() -> None:
        connection.ensure_connection()
        connection.connection.prepare_threshold = 5  # as OPTIONS would set it
        db.fetch_dicts("queue_configs", {"queues": ["default"]})
        # What a pooler in transaction mode does: the next transaction runs on
        # another server connection, where the statement was never prepared.
        with connection.cursor() as cursor:  # by name: psycopg notices DEALLOCATE ALL
            cursor.execute("SELECT name FROM pg_prepared_statements")
            cursor.execute(f"DEALLOCATE {cursor.fetchone()[0]}")
        db.fetch_dicts("queue_configs", {"queues": ["default"]})

    with pytest.raises(DatabaseError, match=r"pooler in transaction mode.*prepare_threshold"):
        on_a_worker_thread(work)


@direct_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("threshold", [None, 2])
def test_enqueue_is_prepared_only_if_the_connection_prepares_at_all(settings, threshold):
    """Job.enqueue's insert is prepared (after prepare_threshold runs) on a connection
    that prepares; Django still sees each run (execute wrappers, the query log)."""
    from django.test.utils import CaptureQueriesContext

    from django_pgjobs import Job

    settings.DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = threshold

    def work() -> tuple[int, int, list[int]]:
        with CaptureQueriesContext(connection) as queries:
            jobs = [Job.enqueue("testproject.demo.tasks.add", [n, n]) for n in range(4)]
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            prepared = cursor.fetchone()[0]
        stored = [Job.objects.get(pk=job.pk).args[0] for job in jobs]
        return prepared, len(queries), stored

    try:
        prepared, seen, stored = on_a_thread_of_its_own(work)
    finally:
        settings.DATABASES["default"]["OPTIONS"].pop("prepare_threshold")
    assert prepared == (0 if threshold is None else 1)
    assert seen == 4 and stored == [0, 1, 2, 3]


@pytest.mark.django_db(transaction=True)
def test_a_prepared_enqueue_gone_from_the_session_is_an_error_that_says_why():
    from django_pgjobs import Job

    def work() -> None:
        connection.ensure_connection()
        connection.connection.prepare_threshold = 0  # as OPTIONS would set it
        Job.enqueue("testproject.demo.tasks.add", [1, 1])
        # A pooler in transaction mode: the next transaction's server connection
        # never saw the statement.
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM pg_prepared_statements")
            cursor.execute(f"DEALLOCATE {cursor.fetchone()[0]}")
        Job.enqueue("testproject.demo.tasks.add", [1, 1])

    with pytest.raises(DatabaseError, match=r"pooler in transaction mode.*prepare_threshold"):
        on_a_thread_of_its_own(work)


@behind_pgbouncer
@pytest.mark.django_db(transaction=True)
def test_session_state_leaks_between_clients_of_pgbouncer():
    """Why pgjobs keeps nothing in the session: two clients, one server connection.
    A session-level advisory lock (the old connector slots) held by one client is
    re-entered by the other, and a prepared statement of one clashes with the other's."""
    params = db.connection_params()
    with psycopg.connect(**params, autocommit=True) as one:
        one.execute("DEALLOCATE ALL")  # what earlier tests' clients left on it
        pid = one.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert one.execute("SELECT pg_try_advisory_lock(42)").fetchone()[0]
        one.execute("SELECT 1", prepare=True)  # psycopg's name: _pg3_0
        with psycopg.connect(**params, autocommit=True) as two:
            # Idle, one's server connection is the next one lent (PgBouncer reuses
            # the last released first).
            assert two.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
            assert two.execute("SELECT pg_try_advisory_lock(42)").fetchone()[0], (
                "a second holder of the same lock: a concurrency limit of 1 exceeded"
            )
            with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
                two.execute("SELECT 2", prepare=True)
            two.execute("SELECT pg_advisory_unlock_all()")
            two.execute("DEALLOCATE ALL")


@behind_pgbouncer
@pytest.mark.django_db
def test_the_suite_runs_through_pgbouncer_and_listens_directly():
    from django.conf import settings

    assert connections["listen"].settings_dict["NAME"] == connection.settings_dict["NAME"]
    assert settings.DATABASES["default"]["PORT"] != settings.DATABASES["listen"]["PORT"]
    assert settings.PGJOBS["LISTEN_DATABASE"] == "listen"
    assert not settings.DATABASES["default"].get("OPTIONS", {}).get("prepare_threshold")


@behind_pgbouncer
@pytest.mark.django_db(transaction=True)
def test_wait_and_events_listen_on_the_direct_connection(threaded_worker):
    """job.wait() and events.listen() LISTEN on LISTEN_DATABASE: through PgBouncer
    in transaction mode they would hear nothing, and wait() would time out."""
    from django_pgjobs import events
    from testproject.demo.tasks import add

    threaded_worker(concurrency=2)
    with events.listen() as stream:
        job = add.enqueue(2, 3)
        assert job.wait(timeout=10).result == 5
        assert stream.first(lambda event: event.job_id == job.pk, timeout=5) is not None


@behind_pgbouncer
@pytest.mark.django_db(transaction=True)
def test_a_worker_ends_no_backend_behind_pgbouncer():
    """PgBouncer hands its clients a pid of its own: the backend a worker's connection
    reports is no server's (and the server connections are not the worker's to end),
    so a worker that lost its connection ends nothing (docs/reliability.md)."""
    from django_pgjobs import lostclaims

    backend = lostclaims.serving("default")
    assert backend is not None and backend.pooled
    assert not lostclaims.end(backend, "default")


@pytest.mark.django_db(transaction=True)
def test_local_settings_hold_in_their_block_alone():
    """db.local_settings sets them local to a transaction: nothing stays on the server
    connection for PgBouncer's next client, and a caller's own settings hold again
    after the block, whether it returned or raised."""

    def timeout() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            return cursor.fetchone()[0]

    default = timeout()
    with db.local_settings(statement_timeout="3s"):
        assert timeout() == "3s"
    assert timeout() == default  # autocommit: the block's transaction has ended
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = '7s'")
        with db.local_settings(statement_timeout="3s", max_parallel_workers_per_gather="0"):
            assert timeout() == "3s"
        assert timeout() == "7s"
        with pytest.raises(ValueError), db.local_settings(statement_timeout="3s"):
            assert timeout() == "3s"
            raise ValueError("the block failed")
        assert timeout() == "7s"
    assert timeout() == default
