"""A failed attempt is retried by its queue's backoff even when the queue's row can't be
read at the moment it failed (the database away, a lock held on the table): the
default backoff (seconds) in its place hammered a rate-limited service a queue was
configured to spare for minutes, as soon as the database was back."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from django_pgjobs import db, execution
from django_pgjobs.models import Job
from django_pgjobs.states import JobState
from tests.factories import JobFactory, QueueFactory

pytestmark = pytest.mark.django_db(transaction=True)

TEN_MINUTES = timedelta(minutes=10)


@contextmanager
def queue_table_locked() -> Iterator[None]:
    """The queue table locked by another session (a migration's ALTER TABLE, an
    operator's LOCK), this session giving up on a lock after 100 ms: its read of a
    queue's row fails with a DatabaseError, as it would with the database away."""
    locker = psycopg.connect(**db.connection_params())
    locker.execute("LOCK TABLE pgjobs_queue IN ACCESS EXCLUSIVE MODE")
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '100ms'")
    try:
        yield
    finally:
        locker.close()  # its transaction ends: the lock is released
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")


def slow_queue_job() -> Job:
    QueueFactory(name="spare-them", backoff_strategy="fixed", backoff_base=600, backoff_jitter=0)
    return JobFactory(executing=True, queue="spare-them", max_attempts=5)


def test_a_failure_whose_queue_cant_be_read_is_retried_by_its_queue_backoff():
    job = slow_queue_job()
    failed_at = timezone.now()
    with queue_table_locked():
        outcome = execution.failed_attempt(job, ValueError("downstream said 429"), failed_at, None)
    assert outcome.state == JobState.RETRYABLE
    # The lock is gone (the database is back): the outcome is written.
    assert execution.record([outcome], give_up_after=None) == [JobState.RETRYABLE]
    job.refresh_from_db()
    assert job.state == JobState.RETRYABLE
    assert job.run_at == failed_at + TEN_MINUTES


def test_a_failure_whose_queue_is_read_is_retried_by_its_queue_backoff_at_once():
    job = slow_queue_job()
    failed_at = timezone.now()
    outcome = execution.failed_attempt(job, ValueError("downstream said 429"), failed_at, None)
    assert outcome.run_at == failed_at + TEN_MINUTES  # known as it fails: its log line says it
    execution.record([outcome], give_up_after=None)
    job.refresh_from_db()
    assert job.run_at == failed_at + TEN_MINUTES


def test_the_queue_read_when_the_outcome_is_written_is_retried_through_the_lock(caplog):
    """Written while the queue's row still can't be read: the write is tried again, as
    through an outage, rather than using the default backoff."""
    caplog.set_level(logging.INFO, logger="django_pgjobs")
    job = slow_queue_job()
    failed_at = timezone.now()
    with queue_table_locked():
        outcome = execution.failed_attempt(job, ValueError("downstream said 429"), failed_at, None)
        with pytest.raises(Exception) as raised:
            execution.record([outcome], give_up_after=None, tries=1)
    assert db.transient(raised.value)
    job.refresh_from_db()
    assert job.state == JobState.EXECUTING  # nothing written, the lease still ours
    assert execution.record([outcome], give_up_after=None) == [JobState.RETRYABLE]
    job.refresh_from_db()
    assert job.run_at == failed_at + TEN_MINUTES
