"""No row stops a worker's outcome writes: a site's trigger that refuses one job's
outcome (a DataError, its own RAISE EXCEPTION, a statement timeout) costs that job
alone. The other outcomes of its batch, and every later batch, are written at once;
the completer thread lives on; the refused job is said once naming it, and stays
executing under the worker's lease until reclaimed, its attempt counted and the
refusal recorded, not lost silently."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_pgjobs import Job, maintenance
from django_pgjobs.states import JobState

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TASK = "testproject.demo.tasks.add"


def outcome_trigger(raise_: str) -> str:
    """A site's trigger refusing the completion of a job whose args[0] is 'odd'."""
    return f"""
CREATE FUNCTION site_audit_outcomes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'completed' AND NEW.args ->> 0 = 'odd' THEN
        {raise_}
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER site_audit_outcomes BEFORE UPDATE ON pgjobs_job
    FOR EACH ROW EXECUTE FUNCTION site_audit_outcomes();
"""


DROP = """
DROP TRIGGER IF EXISTS site_audit_outcomes ON pgjobs_job;
DROP FUNCTION IF EXISTS site_audit_outcomes();
"""


REFUSALS = {
    # invalid_text_representation: a DataError
    "data": ("PERFORM (NEW.args ->> 0)::int;", "invalid input syntax"),
    # the site's own refusal: raise_exception (P0001)
    "raise": ("RAISE EXCEPTION 'no odd outcomes';", "no odd outcomes"),
    # what the server raises for a statement_timeout (query_canceled, 57014): an
    # OperationalError, which the completer took for an outage and retried for ever
    "timeout": (
        "RAISE EXCEPTION USING ERRCODE = '57014', "
        "MESSAGE = 'canceling statement due to statement timeout';",
        "statement timeout",
    ),
}


@pytest.fixture
def refusing():
    def install(kind: str) -> str:
        raise_, said = REFUSALS[kind]
        with connection.cursor() as cursor:
            cursor.execute(outcome_trigger(raise_))
        return said

    yield install
    with connection.cursor() as cursor:
        cursor.execute(DROP)


def state(job: Job) -> str:
    return Job.objects.filter(pk=job.pk).values_list("state", flat=True).first()


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_one_refused_outcome_costs_its_job_alone(threaded_worker, wait, caplog, refusing, kind):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs")
    said = refusing(kind)
    # Enqueued before the worker starts: one claim, and their outcomes in one batch.
    good = [Job.enqueue(TASK, args=[i, 1]) for i in range(8)]
    odd = Job.enqueue(TASK, args=["odd", "b"])
    good += [Job.enqueue(TASK, args=[i, 2]) for i in range(8)]
    began = time.monotonic()
    worker = threaded_worker(concurrency=4, poll_interval=0.2)
    # The batch's other outcomes are written, promptly.
    wait(lambda: all(state(j) == JobState.COMPLETED for j in good), timeout=15)
    assert time.monotonic() - began < 10
    completer = [t for t in threading.enumerate() if t.name == "pgjobs-completer"]
    assert completer and all(t.is_alive() for t in completer)
    # And every later batch.
    later = Job.enqueue(TASK, args=[5, 5])
    wait(lambda: state(later) == JobState.COMPLETED, timeout=5)
    # No outage: a row's refusal is no lost connection, retried as one for ever.
    outages = [
        r.getMessage()
        for r in caplog.records
        if r.name == "django_pgjobs.outage" and r.levelno >= logging.WARNING
    ]
    assert not outages, outages
    # The refused job: said once, naming it and why, at WARNING or above.
    named = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and f"job {odd.pk}" in r.getMessage()
    ]
    assert len(named) == 1, [r.getMessage() for r in named]
    assert said in named[0].getMessage() or said in str(named[0].exc_info)
    # It stays executing under the worker's lease (nothing else may take it while the
    # worker lives), and is reclaimed with its attempt counted and a record of why.
    assert state(odd) == JobState.EXECUTING
    assert odd.pk not in worker.running
    worker.stats.clear()
    reclaimed = maintenance.reclaim_forgotten(
        worker.record.pk,
        list(worker.running),
        timezone.now() + timedelta(hours=1),
        timezone.now(),
    )
    assert reclaimed == 1
    odd.refresh_from_db()
    assert odd.state == JobState.AVAILABLE and odd.attempt == 1
    assert "outcome was never written" in odd.errors[-1]["error"]


def test_a_job_whose_outcome_is_always_refused_ends_discarded_said_once_per_attempt(
    threaded_worker, wait, caplog, refusing, settings
):
    """Not executing for ever, nor run for ever: the worker's own rescue pass takes it
    back, each attempt counted and recorded, and it is discarded once they are used up.
    Each attempt's refusal is said once."""
    settings.PGJOBS = {
        **settings.PGJOBS,
        "HEARTBEAT_INTERVAL": 0.2,
        "RESCUE_INTERVAL": 0.2,
        "WORKER_STALE_AFTER": 1.0,
    }
    caplog.set_level(logging.DEBUG, logger="django_pgjobs")
    refusing("timeout")
    odd = Job.enqueue(TASK, args=["odd", "b"], max_attempts=2)
    worker = threaded_worker(concurrency=2, poll_interval=0.2)
    wait(lambda: state(odd) == JobState.DISCARDED, timeout=30)
    odd.refresh_from_db()
    assert odd.attempt == 2
    assert [e["error"].split(":")[0] for e in odd.errors] == ["WorkerLost", "WorkerLost"]
    said = [r for r in caplog.records if f"job {odd.pk} " in r.getMessage()]
    refused = [r for r in said if "could not be written" in r.getMessage()]
    assert len(refused) == 2 and all(r.levelno == logging.ERROR for r in refused)
    assert all(r.exc_info is None for r in refused)
    assert not [
        r.getMessage()
        for r in caplog.records
        if r.name == "django_pgjobs.outage" and r.levelno >= logging.WARNING
    ]
    later = Job.enqueue(TASK, args=[1, 2])
    wait(lambda: state(later) == JobState.COMPLETED, timeout=5)
    assert worker.stats["crashed"] == 2
