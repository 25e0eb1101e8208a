"""A large enqueue_many's COPY failing in PostgreSQL (temp file space, statement_timeout,
a lost connection): the caller gets PostgreSQL's error as a Django DatabaseError,
nothing of the batch is written, and the caller's transaction carries on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.db import DatabaseError, OperationalError, connection, transaction

from django_pgjobs import Job, PayloadError, db
from django_pgjobs.enqueue import COPY_AT_LEAST
from testproject.demo.tasks import add
from tests.conftest import wait_until

ANYTHING = "tests.tasks_for_tests.takes_anything"

#: What the test triggers wait on, held by another session.
LOCK_KEY = 71_523_009


def batch(size: int = 3 * COPY_AT_LEAST, blocked_at: int | None = None) -> list[dict[str, Any]]:
    """A plain batch (one COPY); the job at ``blocked_at`` stops there (``blocking``)."""
    specs: list[dict[str, Any]] = [{"task": ANYTHING, "args": [i]} for i in range(size)]
    if blocked_at is not None:
        specs[blocked_at] = {"task": ANYTHING, "args": ["block"]}
    return specs


def stored_args() -> list[Any]:
    return sorted(Job.objects.values_list("args", flat=True), key=repr)


#: Enough jobs for the insert trigger's transition table to spill past 64kB of work_mem.
SPILLING = 2000


def short_of_temp_file_space(scope: str = "LOCAL") -> None:
    """The COPY's statement trigger keeps the new rows in a transition table, which
    spills to a temp file past work_mem, larger than the limit (next_job_ids.sql's
    ids fit in it)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SET {scope} work_mem = '64kB'")
        cursor.execute(f"SET {scope} temp_file_limit = '128kB'")


@pytest.mark.django_db(transaction=True)
def test_a_copy_out_of_temp_file_space_in_a_transaction_raises_postgresql_error():
    """The savepoint's abort failed again for want of space: PostgreSQL sent two errors,
    and psycopg's end of the COPY raised "ValueError: too many values to unpack"."""
    with transaction.atomic():
        mine = add.enqueue(1, 1)
        short_of_temp_file_space()
        with pytest.raises(OperationalError, match=r"temp_file_limit.*\n.*COPY pgjobs_job, line"):
            Job.enqueue_many(batch(SPILLING))
        after = add.enqueue(2, 2)  # the transaction carries on, and commits
    assert stored_args() == sorted([mine.args, after.args], key=repr)


@pytest.mark.django_db(transaction=True)
def test_a_copy_out_of_temp_file_space_in_autocommit_writes_none():
    short_of_temp_file_space(scope="SESSION")
    try:
        with pytest.raises(OperationalError) as raised:
            Job.enqueue_many(batch(SPILLING))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET work_mem; RESET temp_file_limit")
    assert isinstance(raised.value.__cause__, psycopg.errors.ConfigurationLimitExceeded)
    assert "CONTEXT:  COPY pgjobs_job, line" in str(raised.value)  # PostgreSQL's own message
    assert not Job.objects.exists()


@pytest.fixture
def blocking() -> Iterator[Callable[[str], None]]:
    """Make the COPY wait on a lock another session holds: ``"mid-stream"`` at the job
    whose args are ["block"] (a BEFORE ROW trigger), ``"at the end"`` after the last
    row (an AFTER STATEMENT trigger, where the insert trigger runs). Only while the
    setting pgjobs_test.block is on: the other inserts of the test go through."""
    holder = psycopg.connect(**db.connection_params(), autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
    committed = []  # in a transactional test's own transaction, the DDL rolls back with it

    def make(where: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE FUNCTION pgjobs_test_wait() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN"
                "  IF current_setting('pgjobs_test.block', true) = 'on' THEN"
                f"   PERFORM pg_advisory_xact_lock_shared({LOCK_KEY});"
                "  END IF;"
                "  RETURN NEW;"
                " END $$"
            )
            cursor.execute(
                "CREATE TRIGGER pgjobs_test_wait BEFORE INSERT ON pgjobs_job FOR EACH ROW"
                """ WHEN (NEW.args = '["block"]') EXECUTE FUNCTION pgjobs_test_wait()"""
                if where == "mid-stream"
                else "CREATE TRIGGER pgjobs_test_wait AFTER INSERT ON pgjobs_job"
                " FOR EACH STATEMENT EXECUTE FUNCTION pgjobs_test_wait()"
            )
        committed.append(not connection.in_atomic_block)

    try:
        yield make
    finally:
        holder.close()
        if any(committed):
            with psycopg.connect(**db.connection_params(), autocommit=True) as cleaner:
                cleaner.execute("DROP TRIGGER IF EXISTS pgjobs_test_wait ON pgjobs_job")
                cleaner.execute("DROP FUNCTION IF EXISTS pgjobs_test_wait()")


def blocked_batch(where: str, size: int = 3 * COPY_AT_LEAST) -> list[dict[str, Any]]:
    return batch(size, blocked_at=COPY_AT_LEAST if where == "mid-stream" else None)


#: Jobs enough that the connection's buffers fill up behind the COPY stopped at the
#: 100th: this process is still sending when the server goes.
STILL_SENDING = 50_000


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["mid-stream", "at the end"])
def test_a_statement_timeout_during_the_copy_leaves_the_transaction_usable(blocking, where):
    blocking(where)
    with transaction.atomic():
        mine = add.enqueue(1, 1)
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = '200ms'")
            cursor.execute("SET LOCAL pgjobs_test.block = on")
        with pytest.raises(OperationalError, match="canceling statement due to statement"):
            Job.enqueue_many(blocked_batch(where))
        assert connection.needs_rollback is False  # the batch's own savepoint undid it
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 0")
            cursor.execute("SET LOCAL pgjobs_test.block = off")
        after = add.enqueue(2, 2)
    assert stored_args() == sorted([mine.args, after.args], key=repr)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["mid-stream", "at the end"])
def test_a_connection_lost_during_the_copy_raises_a_database_error_and_writes_none(blocking, where):
    blocking(where)
    outcome: list[BaseException] = []

    def enqueue() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET pgjobs_test.block = on")
            Job.enqueue_many(blocked_batch(where, STILL_SENDING if where == "mid-stream" else 300))
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)
        finally:
            connection.close()  # this thread's connection

    # Django's connections are per thread: the batch runs on a thread of its own, so
    # this one can terminate its backend once the COPY waits.
    enqueuer = threading.Thread(target=enqueue)
    enqueuer.start()
    with psycopg.connect(**db.connection_params(), autocommit=True) as other:
        waiting = (
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%COPY pgjobs_job%' AND datname = current_database()"
        )
        pid = wait_until(lambda: other.execute(waiting).fetchone())[0]
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    enqueuer.join(timeout=30)
    assert not enqueuer.is_alive()
    [error] = outcome
    assert isinstance(error, DatabaseError), repr(error)
    # PostgreSQL's message, or, while this process was still sending, libpq's.
    assert any(
        said in str(error)
        for said in ("terminating connection due to administrator command", "server closed")
    ), str(error)
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_bad_job_mid_copy_short_of_temp_file_space_still_raises_its_own_error():
    """The job's check fails the COPY: its error reaches the caller, whatever else the
    server says on the way out."""
    specs = batch(SPILLING)
    specs[-1] = {**specs[-1], "args": [float("nan")]}
    with transaction.atomic():
        mine = add.enqueue(1, 1)
        short_of_temp_file_space()
        with pytest.raises(PayloadError, match="not a finite number"):
            Job.enqueue_many(specs)
        after = add.enqueue(2, 2)
    assert stored_args() == sorted([mine.args, after.args], key=repr)
