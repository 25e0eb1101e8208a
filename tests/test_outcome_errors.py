"""No row stops a worker's outcome writes: a site's trigger that refuses one job's
outcome (a DataError, its own RAISE EXCEPTION, a statement timeout) costs that job
alone. The other outcomes of its batch, and every later batch, are written at once;
the completer thread lives on; the refused job is said once naming it, and stays
executing under the worker's lease until reclaimed, its attempt counted and the
refusal recorded, not lost silently.

A transient error that outlasts its tries (a lock held on the job's row, a statement
timeout) is no refusal: the outcome is kept and tried again with a backoff, said once,
the job keeping its slot, never re-run for it; the other outcomes are written as usual."""

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
from django_pgjobs.worker import Worker
from tests.site_database import outage_warnings, trigger_sql

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TASK = "testproject.demo.tasks.add"


def outcome_trigger(raise_: str) -> tuple[str, str]:
    """A site's trigger refusing the completion of a job whose args[0] is 'odd'."""
    return trigger_sql(
        "site_audit_outcomes",
        f"""
    IF NEW.state = 'completed' AND NEW.args ->> 0 = 'odd' THEN
        {raise_}
    END IF;""",
    )


REFUSALS = {
    # invalid_text_representation: a DataError
    "data": ("PERFORM (NEW.args ->> 0)::int;", "invalid input syntax"),
    # the site's own refusal: raise_exception (P0001)
    "raise": ("RAISE EXCEPTION 'no odd outcomes';", "no odd outcomes"),
}

# What the server raises for a statement_timeout (query_canceled, 57014): an
# OperationalError, which the completer took for an outage and retried for ever, then
# (ccbd3f0) a refusal that re-ran the job. Raised while the gate table holds a row.
TIMEOUT = (
    "IF EXISTS (SELECT 1 FROM site_gate) THEN "
    "RAISE EXCEPTION USING ERRCODE = '57014', "
    "MESSAGE = 'canceling statement due to statement timeout'; END IF;"
)


@pytest.fixture
def refusing(site_sql):
    def install(kind: str) -> str:
        raise_, said = REFUSALS[kind]
        site_sql(*outcome_trigger(raise_))
        return said

    return install


@pytest.fixture
def gate(site_sql):
    """The site's trigger raising a statement timeout on the 'odd' job's completion
    while the gate is shut; ``gate(False)`` opens it."""
    site_sql(
        "CREATE TABLE site_gate (shut boolean); INSERT INTO site_gate VALUES (true)",
        "DROP TABLE IF EXISTS site_gate",
    )
    site_sql(*outcome_trigger(TIMEOUT))

    def set_(shut: bool) -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM site_gate")
            if shut:
                cursor.execute("INSERT INTO site_gate VALUES (true)")

    return set_


def state(job: Job) -> str:
    return Job.objects.filter(pk=job.pk).values_list("state", flat=True).first()


def odd_among_others(threaded_worker, wait, max_attempts: int) -> tuple[Job, Worker]:
    """The 'odd' job amid sixteen others, enqueued before a worker starts: one claim,
    and their outcomes in one batch. The others' outcomes are written, promptly."""
    good = [Job.enqueue(TASK, args=[i, 1]) for i in range(8)]
    odd = Job.enqueue(TASK, args=["odd", "b"], max_attempts=max_attempts)
    good += [Job.enqueue(TASK, args=[i, 2]) for i in range(8)]
    began = time.monotonic()
    worker = threaded_worker(concurrency=4, poll_interval=0.2)
    wait(lambda: all(state(j) == JobState.COMPLETED for j in good), timeout=15)
    assert time.monotonic() - began < 10
    return odd, worker


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_one_refused_outcome_costs_its_job_alone(threaded_worker, wait, caplog, refusing, kind):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs")
    said = refusing(kind)
    # Its one attempt: reclaimed, it is discarded, not claimed again by the live worker
    # before the test reads it (a race the poll won now and then).
    odd, worker = odd_among_others(threaded_worker, wait, max_attempts=1)
    completer = [t for t in threading.enumerate() if t.name == "pgjobs-completer"]
    assert completer and all(t.is_alive() for t in completer)
    # And every later batch.
    later = Job.enqueue(TASK, args=[5, 5])
    wait(lambda: state(later) == JobState.COMPLETED, timeout=5)
    # No outage: a row's refusal is no lost connection, retried as one for ever.
    assert not outage_warnings(caplog)
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
    assert odd.state == JobState.DISCARDED and odd.attempt == 1
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
    refusing("raise")
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
    assert not outage_warnings(caplog)
    later = Job.enqueue(TASK, args=[1, 2])
    wait(lambda: state(later) == JobState.COMPLETED, timeout=5)
    assert worker.stats["crashed"] == 2


def named(caplog, job: Job, level: int = logging.WARNING) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= level and f"job {job.pk} " in r.getMessage()
    ]


def test_an_outcome_held_by_a_transient_error_is_kept_and_written_once_it_lifts(
    threaded_worker, wait, caplog, gate, settings
):
    """A statement timeout that lasts (a lock held on the row) is no refusal: the job
    is not marked crashed, so not reclaimed nor run again; its outcome is kept, tried
    again with a backoff, said once, and written once it lifts. The other outcomes, of
    its batch and later ones, are written at once."""
    settings.PGJOBS = {
        **settings.PGJOBS,
        "HEARTBEAT_INTERVAL": 0.2,
        "RESCUE_INTERVAL": 0.2,
        "WORKER_STALE_AFTER": 1.0,
    }
    caplog.set_level(logging.DEBUG, logger="django_pgjobs")
    odd, worker = odd_among_others(threaded_worker, wait, max_attempts=2)
    later = Job.enqueue(TASK, args=[5, 5])
    wait(lambda: state(later) == JobState.COMPLETED, timeout=5)
    # Held past several tries and the stale limit: still executing, its first attempt,
    # in the worker's slots (its lease kept by the heartbeat, not reclaimed).
    wait(lambda: odd.pk in worker._completer.kept, timeout=10)
    time.sleep(2.5)
    odd.refresh_from_db()
    assert odd.state == JobState.EXECUTING and odd.attempt == 1, odd.errors
    assert odd.pk in worker.running
    said = named(caplog, odd)
    assert len(said) == 1 and "statement timeout" in said[0], said
    retried = [m for m in named(caplog, odd, logging.DEBUG) if "trying again" in m]
    assert len(retried) >= 2, named(caplog, odd, logging.DEBUG)
    # Lifted: written once, by this attempt, and its slot freed.
    gate(False)
    wait(lambda: state(odd) == JobState.COMPLETED, timeout=10)
    odd.refresh_from_db()
    assert odd.attempt == 1 and not odd.errors
    wait(lambda: odd.pk not in worker.running, timeout=5)
    assert len(named(caplog, odd)) == 1
    assert worker.stats["crashed"] == 0
    assert not outage_warnings(caplog)
    again = Job.enqueue(TASK, args=[6, 6])
    wait(lambda: state(again) == JobState.COMPLETED, timeout=5)


def test_an_outcome_still_held_at_shutdown_is_left_executing_for_rescue(
    threaded_worker, wait, caplog, gate
):
    """At shutdown a kept outcome gets a last try; one still held is neither handed back
    (which would run it again) nor marked crashed: it stays executing for rescue, and
    the stop says how many were left."""
    caplog.set_level(logging.DEBUG, logger="django_pgjobs")
    odd = Job.enqueue(TASK, args=["odd", "b"])
    worker = threaded_worker(concurrency=2, poll_interval=0.2)
    wait(lambda: odd.pk in worker._completer.kept, timeout=15)
    worker.request_stop()
    wait(lambda: worker._gone.is_set(), timeout=20)
    odd.refresh_from_db()
    assert odd.state == JobState.EXECUTING and odd.attempt == 1
    assert worker.stats["crashed"] == 0 and worker.stats["handed back"] == 0
    left = [r.getMessage() for r in caplog.records if "left executing" in r.getMessage()]
    assert len(left) == 1 and "1 job" in left[0], left


def test_a_kept_outcome_whose_lease_was_taken_meanwhile_is_not_written(
    threaded_worker, wait, caplog, gate
):
    """Kept, it is still checked against its lease when it is tried again: the job
    taken back meanwhile (here discarded, its one attempt used up) is not overwritten."""
    caplog.set_level(logging.DEBUG, logger="django_pgjobs")
    odd = Job.enqueue(TASK, args=["odd", "b"], max_attempts=1)
    worker = threaded_worker(concurrency=2, poll_interval=0.2)
    wait(lambda: odd.pk in worker._completer.kept, timeout=15)
    taken = maintenance.reclaim_forgotten(
        worker.record.pk, [], timezone.now() + timedelta(hours=1), timezone.now()
    )
    assert taken == 1
    gate(False)
    wait(lambda: odd.pk not in worker.running, timeout=10)
    odd.refresh_from_db()
    assert odd.state == JobState.DISCARDED and odd.attempt == 1
    assert worker.stats["lost"] == 1 and worker.stats["completed"] == 0


@pytest.fixture
def stuck_writes(monkeypatch):
    """The completer's writes block (a database that never answers) until released:
    (blocked, release)."""
    from django_pgjobs import completer

    release = threading.Event()
    blocked = threading.Event()
    real = completer.record

    def record(*args: object, **kwargs: object) -> list[str]:
        blocked.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(completer, "record", record)
    yield blocked, release
    release.set()


@pytest.mark.parametrize("second_signal", [False, True])
def test_the_last_writes_at_shutdown_wait_no_longer_than_shutdown_timeout(
    threaded_worker, wait, caplog, settings, stuck_writes, second_signal
):
    """The completer was given a fixed 10 s at shutdown, past SHUTDOWN_TIMEOUT: a
    grace period set a little above it (as the deployment docs say) killed the worker
    before it handed its other jobs back and removed its row. It gets what is left of
    SHUTDOWN_TIMEOUT, at least a second; a second signal (hand back now) a second."""
    settings.PGJOBS = {**settings.PGJOBS, "SHUTDOWN_TIMEOUT": 30.0 if second_signal else 1.0}
    caplog.set_level(logging.INFO, logger="django_pgjobs")
    job = Job.enqueue(TASK, args=[1, 2])
    worker = threaded_worker(concurrency=2, poll_interval=0.2)
    blocked, release = stuck_writes
    wait(blocked.is_set, timeout=15)
    began = time.monotonic()
    worker.request_stop()
    if second_signal:
        worker.request_stop()
    wait(worker._gone.is_set, timeout=30)
    took = time.monotonic() - began
    assert 0.9 <= took < 5.0, took
    assert Job.objects.get(pk=job.pk).state == JobState.EXECUTING  # left for rescue
    left = [r.getMessage() for r in caplog.records if "left executing" in r.getMessage()]
    assert len(left) == 1 and str(job.pk) in left[0], left
    release.set()  # the completer writes it after all (its lease held): before teardown
    worker._completer.thread.join(15)
    assert not worker._completer.thread.is_alive()
