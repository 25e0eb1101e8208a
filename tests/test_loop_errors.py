"""No row and no single bug stops a worker: an error the worker's loop meets that no
lost connection explains (a site's trigger refusing a claim, a bug of ours) is said
once while it repeats, backed off from, and the loop goes on; its shutdown hands back
what it can whatever one hand-back raises. While it keeps failing, its readiness probe
says so."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from django.db import connection

from django_pgjobs import Job, probes, transitions
from django_pgjobs.models import Queue, WorkerProcess
from django_pgjobs.states import JobState
from django_pgjobs.worker import Worker
from testproject.demo.tasks import add
from tests.site_database import outage_warnings, time_out, trigger_sql

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# A site's own audit trigger on the job table, written for numbers in args[0]: a job
# enqueued with a word there makes every claim that takes it fail with a DataError
# (invalid_text_representation), which no lost connection explains. On every queue's
# jobs, or one queue's alone; ``check`` is what it does with a job being claimed.
NUMBERS_ONLY = "PERFORM (NEW.args ->> 0)::int;"


def site_trigger(queue: str | None = None, check: str = NUMBERS_ONLY) -> tuple[str, str]:
    which = "TRUE" if queue is None else "NEW.queue = '" + queue.replace("'", "''") + "'"
    return trigger_sql(
        "site_audit_claims",
        f"""
    IF {which} AND NEW.state = 'executing' AND OLD.state <> 'executing' THEN
        {check}
    END IF;""",
    )


@pytest.fixture
def audit_trigger(site_sql):
    """The trigger on every queue's jobs; the fixture gives what drops it."""
    return site_sql(*site_trigger())


@pytest.fixture
def queue_trigger(site_sql):
    """Installs the trigger on one queue's jobs (``install(queue, check=...)``)."""

    def install(queue: str, check: str = NUMBERS_ONLY) -> None:
        site_sql(*site_trigger(queue, check))

    return install


def loop_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "django_pgjobs.worker" and "a pass of its loop failed" in r.getMessage()
    ]


def queue_failures(caplog: pytest.LogCaptureFixture, queue: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "django_pgjobs.worker"
        and f"a claim of queue {queue!r} failed" in r.getMessage()
    ]


def test_a_claim_a_site_trigger_refuses_does_not_stop_the_worker(
    threaded_worker, wait, caplog, audit_trigger
):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    worker = threaded_worker(poll_interval=0.2)
    thread = next(t for t in threading.enumerate() if getattr(t, "_target", None) == worker.run)
    odd = add.enqueue("a", "b")  # "a" is no int: the site's trigger refuses its claim
    # Said once, with its traceback; the repeats only at DEBUG. (The claim of the
    # queue fails, not the loop's pass: see the tests of one queue's claim below.)
    wait(lambda: len(queue_failures(caplog, "default")) >= 3, timeout=20)
    said = queue_failures(caplog, "default")
    errors = [r for r in said if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in said]
    assert "DataError" in errors[0].getMessage() and "carrying on" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert all(r.levelno == logging.DEBUG for r in said[1:])
    assert thread.is_alive()  # the loop went on: before, it ended, and the worker with it
    assert WorkerProcess.objects.filter(pk=worker.record.pk).exists()
    # Once the trigger is fixed, the jobs it held back run.
    audit_trigger()
    plain = add.enqueue(1, 2)
    wait(lambda: Job.objects.get(pk=plain.pk).state == JobState.COMPLETED, timeout=20)
    wait(lambda: Job.objects.get(pk=odd.pk).state == JobState.COMPLETED, timeout=20)


def test_a_worker_whose_loop_keeps_failing_still_stops_at_once(
    threaded_worker, wait, caplog, monkeypatch
):
    """A bug of ours in a step of the loop: backed off (not a busy loop), and a stop
    cuts the backoff short."""
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    failed_at: list[float] = []

    def broken(self: Worker) -> None:
        failed_at.append(time.monotonic())
        raise TypeError("a bug of ours")

    worker = threaded_worker(poll_interval=0.2)
    thread = next(t for t in threading.enumerate() if getattr(t, "_target", None) == worker.run)
    monkeypatch.setattr(Worker, "enforce_timeouts", broken)
    worker.wakeup.set()
    wait(lambda: len(failed_at) >= 5, timeout=30)
    gaps = [b - a for a, b in itertools.pairwise(failed_at)]
    assert gaps[-1] > gaps[0] and gaps[-1] >= 0.4, gaps  # backing off
    errors = [r for r in loop_failures(caplog) if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "TypeError: a bug of ours" in errors[0].getMessage()
    monkeypatch.undo()  # shutdown itself enforces timeouts
    began = time.monotonic()
    worker.request_stop()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - began < 3.0
    assert not WorkerProcess.objects.filter(pk=worker.record.pk).exists()


def test_a_hand_back_that_raises_does_not_cut_the_shutdown_short(
    threaded_worker, wait, caplog, monkeypatch
):
    """Shutdown's hand-backs caught database errors only: any other exception (a bug
    of ours) left the other jobs and the worker's row for the stale limit's rescue."""
    jobs = [Job.enqueue("tests.tasks_for_tests.blocked", args=[10]) for _ in range(2)]
    worker = threaded_worker(concurrency=2, poll_interval=0.2)
    thread = next(t for t in threading.enumerate() if getattr(t, "_target", None) == worker.run)
    wait(lambda: len(worker.running) == 2, timeout=20)
    real = transitions.hand_back
    first = min(job.pk for job in jobs)

    def hand_back(job: Job, *args: object, **kwargs: object) -> bool:
        if job.pk == first:
            raise TypeError("a bug of ours")
        return real(job, *args, **kwargs)

    monkeypatch.setattr(transitions, "hand_back", hand_back)
    worker.request_stop()
    worker.request_stop()  # hand them back now
    thread.join(15)
    assert not thread.is_alive()
    other = max(job.pk for job in jobs)
    assert Job.objects.get(pk=other).state == JobState.AVAILABLE  # handed back all the same
    assert not WorkerProcess.objects.filter(pk=worker.record.pk).exists()
    said = [r for r in caplog.records if f"could not hand back job {first}" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is not None, [r.getMessage() for r in said]


def test_a_job_handed_back_at_a_stop_is_said_with_its_job_fields(threaded_worker, wait, caplog):
    """The hand-back's line carried no job_id, task or queue: ``--log-format json``
    printed it without them, as a line of no job (it is logged on the stopping thread,
    outside the job)."""
    caplog.set_level(logging.INFO, logger="django_pgjobs.worker")
    job = Job.enqueue("tests.tasks_for_tests.blocked", args=[10])
    worker = threaded_worker(concurrency=1, poll_interval=0.2)
    thread = next(t for t in threading.enumerate() if getattr(t, "_target", None) == worker.run)
    wait(lambda: len(worker.running) == 1, timeout=20)
    worker.request_stop()
    worker.request_stop()  # hand it back now
    thread.join(15)
    assert not thread.is_alive()
    [said] = [r for r in caplog.records if r.getMessage().startswith(f"job {job.pk} (")]
    assert said.getMessage().endswith(" handed back (not counted as an attempt)")
    fields = {key: getattr(said, key, None) for key in ("job_id", "task", "queue", "attempt")}
    assert fields == {
        "job_id": job.pk,
        "task": "tests.tasks_for_tests.blocked",
        "queue": "default",
        "attempt": 1,
    }


def test_a_heartbeat_the_server_refuses_is_said_once_while_it_repeats(
    threaded_worker, wait, caplog, monkeypatch, settings
):
    """A database's error no outage explains in the heartbeat thread (a statement the
    server refused) was said every HEARTBEAT_INTERVAL while it lasted: now once."""
    from django.db import DataError

    from django_pgjobs import worker as worker_module

    settings.PGJOBS = {**settings.PGJOBS, "HEARTBEAT_INTERVAL": 0.1}
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    refused: list[float] = []
    real = worker_module.beat

    def beat(*args: object, **kwargs: object) -> bool:
        if len(refused) < 4:
            refused.append(time.monotonic())
            raise DataError("a row no statement expected")
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "beat", beat)
    worker = threaded_worker(poll_interval=0.2)
    began = worker.heartbeat_ok_at
    wait(lambda: len(refused) >= 4 and worker.heartbeat_ok_at != began, timeout=20)
    said = [r for r in caplog.records if "a row no statement expected" in r.getMessage()]
    errors = [r for r in said if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and len(said) >= 4, [r.getMessage() for r in said]
    assert errors[0].levelname == "ERROR"


# -- one queue's claim failing holds up none of the worker's other queues ------------


def state(job: Job) -> str:
    return Job.objects.get(pk=job.pk).state


# "mail" has a concurrency limit (its claim takes the queue's lock, in a transaction),
# "default" none (one statement, in autocommit).
@pytest.mark.parametrize(("bad", "good"), [("mail", "default"), ("default", "mail")])
def test_a_queue_whose_claim_a_trigger_refuses_holds_up_no_other_queue(
    threaded_worker, wait, caplog, queue_trigger, bad, good
):
    """A claim the trigger refuses failed the whole pass: every queue of the worker
    waited, and, the pass backing off up to 10 s, so did its timeouts. Now that queue
    alone is skipped, with a backoff of its own, said once naming it."""
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    queue_trigger(bad)
    odd = Job.enqueue("testproject.demo.tasks.add", args=["a", "b"], queue=bad)
    held = Job.enqueue("testproject.demo.tasks.add", args=[3, 4], queue=bad)  # behind it
    worker = threaded_worker(queues=[bad, good], concurrency=4, poll_interval=0.2)
    thread = next(t for t in threading.enumerate() if getattr(t, "_target", None) == worker.run)
    # Failed a few times, so that its backoff has grown past a second or so.
    wait(lambda: len(queue_failures(caplog, bad)) >= 5, timeout=30)
    # The other queue's jobs run at once, and its timeouts are enforced on time.
    began = time.monotonic()
    plain = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], queue=good)
    wait(lambda: state(plain) == JobState.COMPLETED, timeout=5)
    assert time.monotonic() - began < 2.0
    timed = Job.enqueue("tests.tasks_for_tests.busy", args=[30], queue=good, timeout=0.5)
    wait(lambda: state(timed) == JobState.EXECUTING, timeout=5)
    began = time.monotonic()
    wait(lambda: state(timed) != JobState.EXECUTING, timeout=10)
    assert time.monotonic() - began < 0.5 + 1.5, "the timeout was enforced late"
    # Said once, naming the queue, with its traceback; the repeats at DEBUG. The loop's
    # own passes went through.
    said = queue_failures(caplog, bad)
    errors = [r for r in said if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in said]
    assert errors[0].levelno == logging.ERROR and errors[0].exc_info is not None
    assert "DataError" in errors[0].getMessage()
    assert all(r.levelno == logging.DEBUG for r in said if r is not errors[0])
    assert not loop_failures(caplog)
    # The refused claims committed nothing: both wait, uncounted.
    for job in (odd, held):
        job.refresh_from_db()
        assert (job.state, job.attempt) == (JobState.AVAILABLE, 0)
    # The odd row removed, the queue's other jobs run (after its backoff, under 10 s).
    Job.objects.filter(pk=odd.pk).delete()
    wait(lambda: state(held) == JobState.COMPLETED, timeout=15)
    assert any(
        f"queue {bad!r} claimed again" in r.getMessage() and r.levelno == logging.INFO
        for r in caplog.records
    )
    assert thread.is_alive()
    began = time.monotonic()
    worker.request_stop()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - began < 3.0


def test_a_worker_stops_at_once_while_a_queue_of_its_is_backed_off(
    threaded_worker, wait, caplog, queue_trigger
):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    queue_trigger("mail")
    Job.enqueue("testproject.demo.tasks.add", args=["a", "b"], queue="mail")
    worker = threaded_worker(queues=["mail", "default"], poll_interval=5.0)
    thread = next(t for t in threading.enumerate() if getattr(t, "_target", None) == worker.run)
    wait(lambda: len(queue_failures(caplog, "mail")) >= 6, timeout=30)  # backoff: seconds
    began = time.monotonic()
    worker.request_stop()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - began < 2.0
    assert not WorkerProcess.objects.filter(pk=worker.record.pk).exists()


def claims_of_default_break(
    monkeypatch: pytest.MonkeyPatch, once: bool = False
) -> tuple[threading.Event, list[int]]:
    """A bug of ours after a claim of queue 'default' committed: building its jobs
    raises, on every such claim while the event given is set (``once``: the first
    alone). Gives that event and the ids of the jobs those claims committed."""
    from django_pgjobs import db

    real = db.fetch_jobs
    broken = threading.Event()
    broken.set()
    committed: list[int] = []

    def fetch_jobs(name: str, params: dict, using: str | None = None) -> list:
        jobs = real(name, params, using)
        if broken.is_set() and params.get("queue") == "default" and jobs:
            if once:
                broken.clear()
            committed.extend(job.pk for job in jobs)
            raise TypeError("a bug of ours building the claimed jobs")
        return jobs

    monkeypatch.setattr(db, "fetch_jobs", fetch_jobs)
    return broken, committed


def test_a_queue_claim_that_may_have_committed_is_handed_back(
    threaded_worker, wait, caplog, monkeypatch
):
    """A failure after a queue's claim committed (a bug of ours building its jobs):
    they are executing under the worker, which never started them. Handed back,
    uncounted, before that queue is claimed again; the other queue meanwhile runs."""
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    broken, committed = claims_of_default_break(monkeypatch)
    victim = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], queue="default")
    worker = threaded_worker(queues=["default", "mail"], poll_interval=0.2)
    wait(lambda: len(queue_failures(caplog, "default")) >= 3, timeout=30)
    assert set(committed) == {victim.pk}
    other = Job.enqueue("testproject.demo.tasks.add", args=[5, 6], queue="mail")
    wait(lambda: state(other) == JobState.COMPLETED, timeout=5)
    # Handed back after each failure: never left executing, no attempt counted.
    wait(lambda: state(victim) == JobState.AVAILABLE, timeout=15)
    assert any("handed back" in r.getMessage() for r in caplog.records)
    broken.clear()
    wait(lambda: state(victim) == JobState.COMPLETED, timeout=15)
    victim.refresh_from_db()
    assert victim.attempt == 1
    assert worker.stats["completed"] >= 2


def test_a_queue_a_trigger_refuses_with_a_plain_raise_holds_up_no_other_queue(
    threaded_worker, wait, caplog, queue_trigger
):
    """A trigger's own refusal, as a site writes one (RAISE EXCEPTION: raise_exception,
    P0001, a ProgrammingError), is that queue's alone too."""
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    queue_trigger(
        "mail", check="IF NEW.args ->> 0 = 'odd' THEN RAISE EXCEPTION 'no odd mail'; END IF;"
    )
    odd = Job.enqueue("testproject.demo.tasks.add", args=["odd", "b"], queue="mail")
    worker = threaded_worker(queues=["mail", "default"], poll_interval=0.2)
    wait(lambda: queue_failures(caplog, "mail"), timeout=20)
    plain = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], queue="default")
    wait(lambda: state(plain) == JobState.COMPLETED, timeout=5)
    [said] = [r for r in queue_failures(caplog, "mail") if r.levelno >= logging.WARNING]
    assert "ProgrammingError: no odd mail" in said.getMessage()
    assert not loop_failures(caplog)
    assert not [r for r in caplog.records if r.name == "django_pgjobs.outage"]
    assert state(odd) == JobState.AVAILABLE
    worker.request_stop()


# -- a statement timeout, lock timeout or deadlock is one queue's, not an outage -------


# A site's trigger on one queue's rows that raises what the server raises for a
# statement it gave up on: a statement_timeout (query_canceled, 57014), a lock_timeout
# (lock_not_available, 55P03), a deadlock (deadlock_detected, 40P01). Each an
# OperationalError, which the worker took for a lost connection: the whole claim pass
# failed, no other queue of the worker was claimed, and every retry warned, closed
# the connection and ran a hand-back. (``queue_trigger`` raises each.)
@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("57014", "canceling statement due to statement timeout"),
        ("55P03", "canceling statement due to lock timeout"),
        ("40P01", "deadlock detected"),
    ],
)
def test_a_statement_timeout_on_one_queues_claim_is_that_queues_alone(
    threaded_worker, wait, caplog, queue_trigger, code, message
):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.outage")
    queue_trigger("mail", check=f"RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = '{message}';")
    slow = Job.enqueue("testproject.demo.tasks.add", args=[1, 1], queue="mail")
    worker = threaded_worker(queues=["mail", "default"], concurrency=4, poll_interval=0.2)
    thread = next(t for t in threading.enumerate() if getattr(t, "_target", None) == worker.run)
    wait(lambda: len(queue_failures(caplog, "mail")) >= 3, timeout=30)
    # The other queue's jobs run at once.
    began = time.monotonic()
    plain = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], queue="default")
    wait(lambda: state(plain) == JobState.COMPLETED, timeout=5)
    assert time.monotonic() - began < 2.0
    # Said once, naming the queue and the error; the repeats at DEBUG.
    said = queue_failures(caplog, "mail")
    errors = [r for r in said if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in said]
    assert message in errors[0].getMessage()
    assert all(r.levelno == logging.DEBUG for r in said if r is not errors[0])
    # No outage: no warning per retry, no lost connection, no failed pass.
    assert not outage_warnings(caplog)
    assert not loop_failures(caplog)
    assert not [r for r in caplog.records if "handed back" in r.getMessage()]
    slow.refresh_from_db()
    assert (slow.state, slow.attempt) == (JobState.AVAILABLE, 0)
    assert thread.is_alive()


def test_a_statement_timeout_in_the_loops_pass_is_said_once_no_outage(
    threaded_worker, wait, caplog, monkeypatch
):
    """Outside the claim (learning its backend, a hand-back), a statement timeout was
    taken for a lost connection: a warning on every retry, the backend ended as a lost
    one's. Now as any error no lost connection explains: said once, backed off from."""
    from django_pgjobs import lostclaims

    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.outage")
    real = lostclaims.serving
    timed_out: list[float] = []

    def serving(using: str) -> object:
        if len(timed_out) < 4:
            timed_out.append(time.monotonic())
            time_out(using)
        return real(using)

    monkeypatch.setattr(lostclaims, "serving", serving)
    worker = threaded_worker(poll_interval=0.2)
    wait(lambda: len(timed_out) >= 4, timeout=30)
    job = add.enqueue(1, 2)
    wait(lambda: state(job) == JobState.COMPLETED, timeout=15)
    said = loop_failures(caplog)
    errors = [r for r in said if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and len(said) >= 4, [r.getMessage() for r in said]
    assert "statement timeout" in errors[0].getMessage()
    assert not outage_warnings(caplog)
    assert worker.stats["completed"] == 1


def test_a_heartbeat_statement_timeout_is_said_once_no_outage(
    threaded_worker, wait, caplog, monkeypatch, settings
):
    """A statement timeout in the heartbeat thread warned as an outage on every beat."""
    from django_pgjobs import worker as worker_module

    settings.PGJOBS = {**settings.PGJOBS, "HEARTBEAT_INTERVAL": 0.1}
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.outage")
    timed_out: list[float] = []
    real = worker_module.beat

    def beat(pk: int, using: str, *args: object) -> bool:
        if len(timed_out) < 4:
            timed_out.append(time.monotonic())
            time_out(using)
        return real(pk, using, *args)

    monkeypatch.setattr(worker_module, "beat", beat)
    worker = threaded_worker(poll_interval=0.2)
    began = worker.heartbeat_ok_at
    wait(lambda: len(timed_out) >= 4 and worker.heartbeat_ok_at != began, timeout=20)
    said = [r for r in caplog.records if "statement timeout" in r.getMessage()]
    errors = [r for r in said if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and len(said) >= 4, [r.getMessage() for r in said]
    assert "heartbeat thread" in errors[0].getMessage()
    assert not outage_warnings(caplog)


# -- the readiness probe says a queue whose claims keep failing, and a failing loop ----


def probe(port: int, path: str) -> tuple[int, str]:
    """A real HTTP request to the worker's probe endpoint: (status, body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def probed(monkeypatch):
    """Serve /livez and /readyz for a started worker, as ``runworker --metrics-port``
    does: a board, its endpoint, and the worker's reporter (every 0.1 s here)."""
    monkeypatch.setattr(probes, "REPORT_EVERY", 0.1)
    endpoint = probes.Endpoint("127.0.0.1", 0, probes.Board(1))
    endpoint.start()
    with contextlib.ExitStack() as stack:

        def serve(worker: Worker) -> int:
            stack.enter_context(probes.Reporter(endpoint.board, 0, worker))
            return endpoint.port

        yield serve
    endpoint.stop()


def test_readiness_fails_while_a_queues_claims_keep_failing_and_comes_back(
    threaded_worker, wait, caplog, queue_trigger, probed, monkeypatch
):
    """The worker heartbeats and /livez says live while one queue makes no progress:
    only its log said so. Past FAILING_AFTER, /readyz says which queue and since when
    (no error text: it quotes the row), and ready again once its claims pass."""
    monkeypatch.setattr(probes, "FAILING_AFTER", 3.0)
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    queue_trigger("mail")
    worker = threaded_worker(queues=["mail", "default"], concurrency=4, poll_interval=0.2)
    port = probed(worker)
    wait(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=10)
    odd = Job.enqueue("testproject.demo.tasks.add", args=["a secret", "b"], queue="mail")
    worker.wakeup.set()
    wait(lambda: queue_failures(caplog, "mail"), timeout=20)
    first_failed = queue_failures(caplog, "mail")[0].created
    _, text = wait(lambda: (r := probe(port, "/readyz"))[0] == 503 and r, timeout=30)
    assert time.time() - first_failed >= 3.0 - 0.2  # not before the threshold
    assert text.startswith("not ready: worker process 1 (pid ")
    assert "queue 'mail': claims failing since " in text and "DataError" in text
    assert "'default'" not in text
    assert "secret" not in text and "invalid input" not in text  # no row data
    # Alive: restarting it would not fix a row.
    assert probe(port, "/livez") == (200, "live\n")
    # The worker's other queue runs meanwhile.
    plain = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], queue="default")
    wait(lambda: state(plain) == JobState.COMPLETED, timeout=10)
    assert probe(port, "/readyz")[0] == 503
    # The row gone, the queue's claims pass again (after its backoff): ready.
    Job.objects.filter(pk=odd.pk).delete()
    wait(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=20)


def test_readiness_fails_while_the_workers_loop_keeps_failing(
    threaded_worker, wait, caplog, probed, monkeypatch
):
    monkeypatch.setattr(probes, "FAILING_AFTER", 1.0)
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    worker = threaded_worker(poll_interval=0.2)
    port = probed(worker)
    wait(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=10)

    def broken(self: Worker) -> None:
        raise TypeError("a bug of ours")

    with monkeypatch.context() as patched:
        patched.setattr(Worker, "enforce_timeouts", broken)
        worker.wakeup.set()
        _, text = wait(lambda: (r := probe(port, "/readyz"))[0] == 503 and r, timeout=30)
        assert "its loop: passes failing since " in text and "TypeError" in text
        assert "a bug of ours" not in text
        assert probe(port, "/livez") == (200, "live\n")
    worker.wakeup.set()
    wait(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=20)


def test_a_paused_queue_whose_claims_failed_is_no_reason_to_be_unready(
    threaded_worker, wait, caplog, queue_trigger, probed, monkeypatch
):
    """Pausing the queue is how an operator stops it being claimed until the row is
    dealt with: it makes no progress on purpose."""
    monkeypatch.setattr(probes, "FAILING_AFTER", 1.0)
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    queue_trigger("mail")
    Job.enqueue("testproject.demo.tasks.add", args=["a", "b"], queue="mail")
    worker = threaded_worker(queues=["mail", "default"], poll_interval=0.2)
    port = probed(worker)
    wait(lambda: probe(port, "/readyz")[0] == 503, timeout=30)
    Queue.objects.filter(name="mail").update(paused=True)
    wait(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=20)


def test_a_paused_queue_keeps_its_failures_and_goes_on_failing_once_resumed(
    threaded_worker, wait, caplog, queue_trigger, probed, monkeypatch
):
    """A pause dropped the queue's failure record: resumed with its row still there,
    its first failure was said at ERROR again, with its traceback, as if new, and its
    readiness counted from then. Kept across the pause (not said failing meanwhile), it
    goes on: said at DEBUG, failing for as long as before the pause."""
    monkeypatch.setattr(probes, "FAILING_AFTER", 1.0)
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    queue_trigger("mail")
    Job.enqueue("testproject.demo.tasks.add", args=["a", "b"], queue="mail")
    worker = threaded_worker(queues=["mail", "default"], poll_interval=0.2)
    port = probed(worker)
    wait(lambda: probe(port, "/readyz")[0] == 503, timeout=30)
    [(queue, since, _, error)] = worker.failing(0)
    assert (queue, error) == ("mail", "DataError")
    Queue.objects.filter(name="mail").update(paused=True)
    wait(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=20)
    assert worker.failing(0) == []
    tried = len(queue_failures(caplog, "mail"))
    Queue.objects.filter(name="mail").update(paused=False)
    wait(lambda: len(queue_failures(caplog, "mail")) > tried, timeout=20)
    again = queue_failures(caplog, "mail")[tried:]
    assert all(r.levelno == logging.DEBUG for r in again), [r.getMessage() for r in again]
    errors = [r for r in queue_failures(caplog, "mail") if r.levelno == logging.ERROR]
    assert len(errors) == 1
    wait(lambda: probe(port, "/readyz")[0] == 503, timeout=20)
    [(queue, resumed_since, failures, _)] = worker.failing(0)
    # Its first failure's, moved later by the pause: the failing time counts no pause.
    assert queue == "mail" and resumed_since > since and failures > tried


def test_a_queue_failing_before_a_pause_counts_its_failing_time_without_the_pause(
    worker, monkeypatch, caplog
):
    """Paused for days, then resumed: its failing time went on through the pause, and
    the line said "claims go through again after 3d" of a queue failing for 50 seconds.
    The pause is not counted (readiness: failing 40 s already, said at once), and the
    line says the pause apart."""
    from django_pgjobs import claimer as claimer_module

    clock = SimpleNamespace(monotonic=lambda: 0.0)
    monkeypatch.setattr(claimer_module, "time", clock)
    caplog.set_level(logging.INFO, logger="django_pgjobs.worker")
    worker._claimer._claim_failed("default", ValueError("refused"), undone=True)
    clock.monotonic = lambda: 40.0
    worker._claimer._forget_refused({"default": {"paused": True}})
    assert worker.failing(0) == []
    days = 3 * 86400
    clock.monotonic = lambda: 40.0 + days
    worker._claimer._forget_refused({"default": {}})  # resumed
    [(queue, since, failures, _)] = worker.failing(30)
    assert (queue, since, failures) == ("default", days, 1)  # failing 40 s: now - since
    clock.monotonic = lambda: 50.0 + days
    worker._claimer._claim_passed("default", tried_full=True)
    [line] = [r.getMessage() for r in caplog.records if "go through again" in r.getMessage()]
    assert "claims go through again after 50s (1 failed claim(s) meanwhile; paused 3d" in line


def test_a_full_worker_tries_a_refused_queue_again_and_is_ready_once_it_passes(
    threaded_worker, wait, caplog, queue_trigger, probed, monkeypatch
):
    """A worker with no free slot claims nothing: a refused queue was not tried again
    until a slot freed, and /readyz said its claims failing long after the row was
    dealt with. Its claim is tried (and undone) at its backoff while the worker is
    full: still failing while the row is there, ready once it is gone."""
    monkeypatch.setattr(probes, "FAILING_AFTER", 1.0)
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    queue_trigger("mail")
    odd = Job.enqueue("testproject.demo.tasks.add", args=["a", "b"], queue="mail")
    worker = threaded_worker(
        queues=["mail", "default"], concurrency=1, prefetch=0, poll_interval=0.2
    )
    port = probed(worker)
    wait(lambda: probe(port, "/readyz")[0] == 503, timeout=30)
    busy = Job.enqueue("tests.tasks_for_tests.until_cancelled", args=["full", 60])
    try:
        worker.wakeup.set()
        wait(lambda: state(busy) == JobState.EXECUTING, timeout=10)
        assert worker.free_slots() == 0
        # Full, the row still there: tried again, failing again, unready.
        tried = len(queue_failures(caplog, "mail"))
        wait(lambda: len(queue_failures(caplog, "mail")) >= tried + 2, timeout=30)
        assert probe(port, "/readyz")[0] == 503
        assert state(odd) == JobState.AVAILABLE  # a try while full claims nothing
        # The row gone: ready while the worker is still full, the queue's jobs left alone.
        Job.objects.filter(pk=odd.pk).delete()
        plain = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], queue="mail")
        wait(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=20)
        assert state(busy) == JobState.EXECUTING and state(plain) == JobState.AVAILABLE
        passed = [r.getMessage() for r in caplog.records if "go through again" in r.getMessage()]
        assert len(passed) == 1 and "queue 'mail'" in passed[0] and "full" in passed[0]
    finally:
        transitions.cancel(Job.objects.get(pk=busy.pk))
    wait(lambda: state(plain) == JobState.COMPLETED, timeout=20)


# -- a claim in doubt: said by its cause; a refused hand-back fails on its own ---------


def handed_back_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "handed back" in r.getMessage()]


def test_the_jobs_of_a_failed_claim_are_said_handed_back_for_its_real_cause(
    threaded_worker, wait, caplog, monkeypatch
):
    """A claim put in doubt by its own failure (a bug of ours after it committed, here)
    was said to have 'committed as the connection broke', which no connection did."""
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    claims_of_default_break(monkeypatch, once=True)
    victim = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], queue="default")
    threaded_worker(queues=["default"], poll_interval=0.2)
    wait(lambda: state(victim) == JobState.COMPLETED, timeout=15)
    [line] = handed_back_lines(caplog)
    assert "connection broke" not in line, line
    assert "queue 'default'" in line and "TypeError: a bug of ours" in line, line
    assert f"job(s) {victim.pk} handed back" in line, line


# A site's trigger refusing the hand-back of a claim in doubt (executing, back to
# available) while the gate table holds a row.
HAND_BACK_GATE = """
CREATE TABLE site_hand_back_gate (closed bool);
INSERT INTO site_hand_back_gate VALUES (true);
"""
HAND_BACK_TRIGGER = trigger_sql(
    "site_no_hand_back",
    """
    IF OLD.state = 'executing' AND NEW.state = 'available'
            AND EXISTS (SELECT 1 FROM site_hand_back_gate WHERE closed) THEN
        RAISE EXCEPTION 'a site''s trigger says no hand-back';
    END IF;""",
)


def test_a_hand_back_a_site_trigger_refuses_fails_on_its_own(
    threaded_worker, wait, caplog, monkeypatch, site_sql
):
    """The refused hand-back failed the whole pass, every pass: no queue was claimed
    while it lasted. Now said once while it repeats, retried, and claims go on."""
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    site_sql(HAND_BACK_GATE, "DROP TABLE IF EXISTS site_hand_back_gate")
    site_sql(*HAND_BACK_TRIGGER)
    _, committed = claims_of_default_break(monkeypatch, once=True)
    victim = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], queue="default")
    worker = threaded_worker(queues=["default", "mail"], poll_interval=0.2)
    refused = lambda: [  # noqa: E731
        r for r in caplog.records if "no hand-back" in r.getMessage()
    ]
    wait(lambda: len(refused()) >= 3, timeout=30)
    assert committed == [victim.pk] and state(victim) == JobState.EXECUTING
    # Claims go on meanwhile.
    began = time.monotonic()
    other = Job.enqueue("testproject.demo.tasks.add", args=[5, 6], queue="mail")
    wait(lambda: state(other) == JobState.COMPLETED, timeout=5)
    assert time.monotonic() - began < 2.0
    errors = [r for r in refused() if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in refused()]
    assert "hand-back" in errors[0].getMessage()
    assert not loop_failures(caplog)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE site_hand_back_gate SET closed = false")
    wait(lambda: state(victim) == JobState.COMPLETED, timeout=15)
    victim.refresh_from_db()
    assert victim.attempt == 1
    assert worker.stats["completed"] == 2
