"""Outages and dead network paths, with real worker processes: outcomes are never
dropped while their worker lives, a silent connection is noticed, a worker that
can't reach the database for longer than the stale limit exits for a restart."""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from psycopg import sql

from django_pgjobs import Job, db, execution, liveness, ratelimits
from django_pgjobs.models import Queue, RateWindow, WorkerProcess
from django_pgjobs.states import JobState
from testproject.demo.tasks import add
from tests import conftest
from tests.pgproxy import PgProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAST = {
    "PGJOBS_HEARTBEAT_INTERVAL": "0.3",
    "PGJOBS_RESCUE_INTERVAL": "0.3",
    "PGJOBS_POLL_INTERVAL": "0.5",
}


@pytest.fixture
def proxy() -> Iterator[PgProxy]:
    through = PgProxy()
    yield through
    through.close()


def url_through(proxy: PgProxy) -> str:
    url = conftest.test_database_env()["DATABASE_URL"]
    host_and_port = url.split("@", 1)[1].split("/", 1)[0]
    return url.replace(host_and_port, f"127.0.0.1:{proxy.port}", 1)


def state(job: Job) -> str:
    return Job.objects.get(pk=job.pk).state


@contextlib.contextmanager
def database_away() -> Iterator[None]:
    """The test database refuses connections, and every one of them but the test's
    own is ended: a server that went away, as its clients see it."""
    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        ours = cursor.fetchone()[0]
    params = {**db.connection_params(), "dbname": "postgres"}
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        try:
            admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> %s",
                [name, ours],
            )
            yield
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name))
            )


def test_an_outcome_is_written_after_an_outage_longer_than_a_minute(worker_process, wait):
    """The completer used to give up after 60 s of outage, leaving the job executing
    under its live worker's lease for good."""
    env = {**FAST, "PGJOBS_WORKER_STALE_AFTER": "600"}
    process = worker_process("--concurrency", "2", env=env)
    job = Job.enqueue("tests.tasks_for_tests.blocked", args=[2])
    wait(lambda: state(job) == JobState.EXECUTING, timeout=30)
    with database_away():
        # The outage lasts longer than the completer's old retry window: a fixed
        # duration is the point here, not a condition to wait for.
        time.sleep(execution.OUTAGE_WINDOW + 5)
        assert process.proc.poll() is None, process.output()
    # Its outcome is written, not dropped: completed, or (when the job's own thread
    # met the outage while tidying up its connections) a failed attempt to retry.
    wait(lambda: state(job) in (JobState.COMPLETED, JobState.RETRYABLE), timeout=60)
    done = Job.objects.get(pk=job.pk)
    assert done.result == "finished" or done.errors, process.output()[-3000:]
    assert process.stop() == 0, process.output()


def test_an_overdue_job_failed_through_an_outage_is_said_once(worker_process, wait):
    """Failing a job whose thread ignored its timeout is retried on every pass of
    the loop until the database answers: each pass used to say again that the job
    ignored its timeout, and that failing it failed."""
    env = {**FAST, "PGJOBS_WORKER_STALE_AFTER": "600"}
    process = worker_process("--concurrency", "1", env=env)
    job = Job.enqueue("tests.tasks_for_tests.blocked", args=[15], max_attempts=1, timeout=2)
    wait(lambda: state(job) == JobState.EXECUTING, timeout=30)
    with database_away():  # before its timeout and grace (3 s) are up
        wait(lambda: "could not fail overdue job" in process.output(), timeout=30)
        # Long enough for several passes of the loop (its backoff doubles from 0.1 s):
        # a fixed duration is the point here, not a condition to wait for.
        time.sleep(5)
    wait(lambda: state(job) == JobState.DISCARDED, timeout=30)
    written = f"job {job.pk}: its failure at its timeout written after"
    wait(lambda: written in process.output(), timeout=10)
    said = [line for line in process.output().splitlines() if f"job {job.pk}" in line]
    assert sum("ignored its timeout" in line for line in said) == 1, said
    assert sum("could not fail overdue job" in line for line in said) == 1, said
    assert process.stop() == 0, process.output()


def test_a_job_its_live_worker_no_longer_holds_is_returned_to_the_queue(
    threaded_worker, wait, settings
):
    settings.PGJOBS = {**settings.PGJOBS, "HEARTBEAT_INTERVAL": 0.1, "RESCUE_INTERVAL": 0.1}
    worker = threaded_worker(poll_interval=0.2)
    forgotten = add.enqueue(2, 3)
    # Claimed by this worker long ago, yet not among the jobs it runs: an outcome
    # dropped by a bug leaves exactly this.
    Job.objects.filter(pk=forgotten.pk).update(
        state=JobState.EXECUTING,
        worker=worker.record.pk,
        lease=uuid.uuid4(),
        attempt=1,
        attempted_at=timezone.now() - timedelta(minutes=5),
    )
    wait(lambda: state(forgotten) == JobState.COMPLETED, timeout=10)
    forgotten.refresh_from_db()
    assert forgotten.result == 5 and forgotten.attempt == 2
    assert "no longer held this job" in forgotten.errors[0]["error"]


def test_a_worker_whose_outcomes_wait_holds_at_most_twice_its_capacity(db):
    from django_pgjobs.worker import Worker

    worker = Worker(concurrency=3, prefetch=2)
    worker.running = {n: None for n in range(12)}  # type: ignore[misc]
    worker._returned = set(range(12))
    assert worker.free_slots() == 5 - 12 + 5  # only 5 returned jobs free a slot
    worker.running = {n: None for n in range(10)}  # type: ignore[misc]
    worker._returned = set(range(10))
    assert worker.free_slots() == 0


def test_a_silent_listen_connection_is_noticed_and_replaced(worker_process, wait, proxy):
    env = {
        **FAST,
        "PGJOBS_POLL_INTERVAL": "60",  # a pickup within seconds can only be LISTEN's
        "LISTEN_DATABASE_URL": url_through(proxy),
    }
    process = worker_process(env=env)
    wait(lambda: " started: " in process.output() and proxy.connections() >= 1, timeout=30)
    first = add.enqueue(1, 1)
    wait(lambda: state(first) == JobState.COMPLETED, timeout=10)

    proxy.blackhole()  # the listener's path goes silent; new connections get through
    wait(lambda: proxy.connections() >= 2, timeout=15)
    assert "liveness check" in process.output()
    # The new listener is up once it answers; then a job starts within seconds.
    second_at = time.monotonic()
    second = add.enqueue(2, 2)
    wait(lambda: state(second) == JobState.COMPLETED, timeout=20)
    assert time.monotonic() - second_at < 20
    assert process.stop() == 0, process.output()


def test_a_worker_cut_off_from_the_database_exits_for_a_restart(worker_process, wait, proxy):
    env = {**FAST, "PGJOBS_WORKER_STALE_AFTER": "3", "DATABASE_URL": url_through(proxy)}
    process = worker_process(env=env)
    wait(lambda: WorkerProcess.objects.exists(), timeout=30)
    proxy.blackhole(new_ones_too=True)
    cut_at = time.monotonic()
    assert process.wait(30) == liveness.EXIT_STALE, process.output()
    assert time.monotonic() - cut_at < 20
    assert "no heartbeat written" in process.output()


def test_a_worker_cut_off_from_the_database_stops_on_sigterm(worker_process, wait, proxy):
    env = {**FAST, "PGJOBS_WORKER_STALE_AFTER": "5", "DATABASE_URL": url_through(proxy)}
    process = worker_process(env=env)
    wait(lambda: WorkerProcess.objects.exists(), timeout=30)
    job = Job.enqueue("tests.tasks_for_tests.blocked", args=[30])
    wait(lambda: state(job) == JobState.EXECUTING, timeout=30)
    proxy.blackhole(new_ones_too=True)
    stopped_at = time.monotonic()
    code = process.stop(signal.SIGTERM, timeout=30)
    assert code in (0, liveness.EXIT_STALE), process.output()
    assert time.monotonic() - stopped_at < 25


def test_worker_connections_are_named_and_keep_alive(worker_process, wait):
    process = worker_process(env=FAST)
    wait(lambda: WorkerProcess.objects.exists(), timeout=30)
    pid = WorkerProcess.objects.get().pid

    def names() -> set[str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
            )
            return {row[0] for row in cursor.fetchall()}

    wait(lambda: any(n.endswith(f":{pid} listen") for n in names()), timeout=10)
    assert any(n.startswith("pgjobs worker ") and n.endswith(f":{pid}") for n in names())
    assert process.stop() == 0, process.output()


def test_a_listen_that_hears_nothing_is_reported_at_start(worker_process, wait):
    # LISTEN on another database of the same server: like PgBouncer in transaction
    # mode, it never hears what is sent through the jobs database.
    url = conftest.test_database_env()["DATABASE_URL"]
    elsewhere = url.rsplit("/", 1)[0] + "/postgres"
    process = worker_process(env={**FAST, "LISTEN_DATABASE_URL": elsewhere})
    wait(lambda: "LISTEN_DATABASE" in process.output(), timeout=30)
    assert "did not hear a notification" in process.output()
    # It still works, by polling.
    job = add.enqueue(1, 2)
    wait(lambda: state(job) == JobState.COMPLETED, timeout=15)
    assert process.stop() == 0, process.output()


def test_a_listen_that_hears_is_not_reported(worker_process, wait):
    process = worker_process(env={**FAST, "PGJOBS_LOG_LEVEL": "DEBUG"})
    wait(lambda: "LISTEN heard its probe" in process.output(), timeout=30)
    assert "did not hear" not in process.output()
    assert process.stop() == 0, process.output()


# -- a claim that outlives its connection ---------------------------------------------

#: The advisory lock the scratch trigger of ``held_claim`` makes the first claim wait on.
HELD = 74_201
#: The scratch trigger's SQL: {when} is BEFORE (mid-statement) or a deferred AFTER (at
#: COMMIT). Only the first claim of any job waits (a sequence counts them, outside
#: every transaction).
HOLD_FIRST_CLAIM = """
CREATE SEQUENCE pgjobs_test_claims;
CREATE FUNCTION pgjobs_test_hold_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('pgjobs_test_claims') = 1 THEN
        PERFORM pg_advisory_xact_lock_shared({lock});
    END IF;
    RETURN NEW;
END $$;
CREATE {kind} TRIGGER pgjobs_test_hold_claim {when} UPDATE ON pgjobs_job {timing}
    FOR EACH ROW WHEN (OLD.state <> 'executing' AND NEW.state = 'executing')
    EXECUTE FUNCTION pgjobs_test_hold_claim();
"""
UNDO_HOLD = """
DROP TRIGGER IF EXISTS pgjobs_test_hold_claim ON pgjobs_job;
DROP FUNCTION IF EXISTS pgjobs_test_hold_claim();
DROP SEQUENCE IF EXISTS pgjobs_test_claims;
"""
IN_THE_STATEMENT = {"kind": "", "when": "BEFORE", "timing": ""}
WHERE_HELD = {
    # A claim statement (autocommit: the server has its Sync, and commits when done).
    "statement": IN_THE_STATEMENT,
    # A rate-limited claim's statement, in its transaction: the client never sends its
    # COMMIT, and the backend then sits idle in it, holding the queue's lock.
    "rated statement": IN_THE_STATEMENT,
    # A rate-limited claim's COMMIT (its jobs and the window's starts written).
    "rated commit": {
        "kind": "CONSTRAINT",
        "when": "AFTER",
        "timing": "DEFERRABLE INITIALLY DEFERRED",
    },
}


@dataclass
class HeldClaim:
    admin: psycopg.Connection
    where: str  # of WHERE_HELD

    @property
    def rated(self) -> bool:
        return self.where.startswith("rated")

    def backend(self) -> tuple[int, int] | None:
        """(pid, client_port) of the backend waiting in the trigger, if one is."""
        row = self.admin.execute(
            "SELECT pid, client_port FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        ).fetchone()
        return (row[0], row[1]) if row else None

    def claims_since(self, since: datetime, other_than: int) -> bool:
        """Whether a backend other than ``other_than`` runs (or last ran) a claim begun
        since ``since``: the worker's loop reconnected and is past its hand-back."""
        return self.admin.execute(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid NOT IN (%s, pg_backend_pid()) AND query_start > %s"
            " AND (query LIKE '%%Claim up to%%'"
            " OR query LIKE '%%Serialise claimers%%'))",
            [other_than, since],
        ).fetchone()[0]

    def now(self) -> datetime:
        return self.admin.execute("SELECT clock_timestamp()").fetchone()[0]

    def release(self) -> None:
        self.admin.execute("SELECT pg_advisory_unlock(%s)", [HELD])


@pytest.fixture(params=sorted(WHERE_HELD))
def held_claim(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[HeldClaim]:
    """The worker's first claim waits on an advisory lock this test holds: at the
    trigger's place (``request.param``)."""
    with psycopg.connect(**db.connection_params(), autocommit=True) as admin:
        admin.execute(UNDO_HOLD)
        admin.execute(HOLD_FIRST_CLAIM.format(lock=HELD, **WHERE_HELD[request.param]))
        admin.execute("SELECT pg_advisory_lock(%s)", [HELD])
        try:
            yield HeldClaim(admin, request.param)
        finally:
            admin.execute("SELECT pg_advisory_unlock_all()")
            # A lost claim's backend left idle in its transaction (what the fix ends)
            # would hold the table's lock for good, and the DROP TRIGGER wait for it.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state LIKE 'idle in transaction%%'"
            )
            admin.execute(UNDO_HOLD)


def lose_a_held_claim(
    start: Callable[..., conftest.WorkerProcess], proxy: PgProxy, held_claim: HeldClaim
) -> tuple[conftest.WorkerProcess, Job, Job]:
    """The worker's first claim, of a job on its last attempt, waits in ``held_claim``;
    the worker's connection breaks under it (its client alone: the backend goes on),
    the worker reconnects and claims again, and the backend is let go. Returns the
    worker, that job and one enqueued after the break."""
    if held_claim.rated:
        Queue.objects.update_or_create(
            name="default", defaults={"rate_limit": 100, "rate_period": 600.0}
        )
    url = url_through(proxy) + "?sslmode=disable&gssencmode=disable"  # see PgProxy
    env = {**FAST, "PGJOBS_WORKER_STALE_AFTER": "3", "DATABASE_URL": url}
    held = Job.enqueue("testproject.demo.tasks.add", args=[1, 1], max_attempts=1)
    process = start(env=env)
    pid, port = conftest.wait_until(held_claim.backend, timeout=30)
    cut_at = held_claim.now()
    proxy.cut_client_of(port)
    other = add.enqueue(2, 2)
    # A claim since the break (which took that job, or waits for the queue's lock the
    # lost claim holds) comes after the worker's hand-back.
    conftest.wait_until(
        lambda: (
            state(other) != JobState.AVAILABLE or held_claim.claims_since(cut_at, other_than=pid)
        ),
        timeout=30,
    )
    held_claim.release()  # the lost claim's backend goes on, if it still lives
    return process, held, other


def ran_once(process: conftest.WorkerProcess, *jobs: Job) -> None:
    """Each of ``jobs`` completed on its first attempt, nothing counted against it."""
    for job in jobs:
        conftest.wait_until(
            lambda job=job: state(job) not in (JobState.AVAILABLE, JobState.EXECUTING),
            timeout=30,
        )
        job.refresh_from_db()
        assert (job.state, job.attempt, job.errors) == (JobState.COMPLETED, 1, []), (
            job.errors,
            process.output()[-3000:],
        )


def starts_recorded() -> int:
    return len(RateWindow.objects.get(scope=ratelimits.queue_scope("default")).starts)


def test_a_claim_that_commits_after_its_client_gave_up_loses_no_job(
    worker_process, proxy, held_claim
):
    """The worker's connection breaks while its claim's backend is still at work (a
    partition: the client gave up, the server did not notice), and the backend commits
    the claim later, after the worker's hand-back of lost claims ran. The claimed job,
    on its last attempt, sat executing under a live worker that never got it, until
    reclaim_forgotten discarded it, counted, never run (3 s here, WORKER_STALE_AFTER:
    60-90 s by default); a rate-limited queue's window kept the lost claim's start.
    A rate-limited claim whose COMMIT never came sat idle in its transaction, holding
    the queue's lock: no claim of that queue got through, any worker's, until the
    server noticed its client gone (never, here: the proxy answers for it). Now the
    worker ends that backend before its hand-back: the claim rolls back."""
    process, held, other = lose_a_held_claim(worker_process, proxy, held_claim)
    ran_once(process, held, other)
    assert "was still active: ended it" in process.output()
    if held_claim.rated:  # the two jobs' starts, not the lost claim's too
        assert starts_recorded() == 2
    assert process.stop() == 0, process.output()[-3000:]


# A backend idle in a claim's transaction is ended by PgBouncer itself, which closes
# the server connection of a client that left in a transaction: not by this proxy.
@pytest.mark.parametrize("held_claim", ["statement", "rated commit"], indirect=True)
def test_behind_a_pooler_a_claim_that_commits_late_is_given_back_all_the_same(
    worker_process, held_claim
):
    """A pooler (PgBouncer) hands its clients pids of its own: the lost claim's backend
    can't be told, nor is it the worker's to end. The worker hands back again every
    second, until WORKER_STALE_AFTER after the loss: a claim committed meanwhile has
    its jobs given back uncounted all the same (a rate limit's window keeps its start)."""
    proxy = PgProxy(hide_backend_pids=True)
    try:
        process, held, other = lose_a_held_claim(worker_process, proxy, held_claim)
        ran_once(process, held, other)
        assert "ended" not in process.output()
        if held_claim.rated:
            assert starts_recorded() == 3
        assert process.stop() == 0, process.output()[-3000:]
    finally:
        proxy.close()


@pytest.mark.parametrize("step", ["rescue_orphaned", "reclaim_forgotten"])
def test_a_bug_in_a_heartbeat_step_is_said_once_and_the_heartbeat_goes_on(
    threaded_worker, wait, settings, monkeypatch, caplog, step
):
    """The heartbeat thread caught database errors only around its rescue and its
    reclaim: any other exception (a bug of ours meeting an odd row) ended the thread,
    the heartbeat stopped, and other workers took the jobs this one still ran."""
    from django_pgjobs import maintenance
    from django_pgjobs.worker import Worker

    settings.PGJOBS = {**settings.PGJOBS, "HEARTBEAT_INTERVAL": 0.1, "RESCUE_INTERVAL": 0.1}
    raised: list[float] = []
    ran: list[str] = []

    def buggy(*args: object, **kwargs: object) -> int:
        raised.append(time.monotonic())
        raise TypeError("a bug of ours")

    def spy(name: str, real: Callable[..., int]) -> Callable[..., int]:
        def called(*args: object, **kwargs: object) -> int:
            ran.append(name)
            return real(*args, **kwargs)

        return called

    rescue = spy("rescue_orphaned", maintenance.rescue_orphaned)
    reclaim = spy("reclaim_forgotten", Worker.reclaim_forgotten)
    monkeypatch.setattr(maintenance, "rescue_orphaned", rescue)
    monkeypatch.setattr(Worker, "reclaim_forgotten", reclaim)
    if step == "rescue_orphaned":
        monkeypatch.setattr(maintenance, "rescue_orphaned", buggy)
    else:
        monkeypatch.setattr(Worker, "reclaim_forgotten", buggy)
    worker = threaded_worker(poll_interval=0.2)
    wait(lambda: len(raised) >= 3, timeout=10)
    # The other step still runs, and the heartbeat is still written after the bug.
    other = "reclaim_forgotten" if step == "rescue_orphaned" else "rescue_orphaned"
    wait(lambda: other in ran, timeout=10)
    beat_at = WorkerProcess.objects.get(pk=worker.record.pk).heartbeat_at
    wait(lambda: WorkerProcess.objects.get(pk=worker.record.pk).heartbeat_at > beat_at, timeout=10)
    assert worker._heartbeat is not None and worker._heartbeat.is_alive()
    said = [r for r in caplog.records if "a bug of ours" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]  # once, not once a beat
    assert said[0].levelname == "ERROR" and said[0].exc_info is not None
    assert said[0].name.startswith("django_pgjobs")
