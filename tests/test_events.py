"""Every transition is published; wait() wakes on the job's own event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import statistics
import threading
import time
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from django_pgjobs import Job, db, events
from django_pgjobs.exceptions import InvalidOption, JobGone
from django_pgjobs.models import Queue
from django_pgjobs.signals import job_completed, job_discarded, job_retrying, job_started
from django_pgjobs.states import JobState
from django_pgjobs.waiting import WAIT_CHECK_EVERY
from testproject.demo.tasks import add, always_fails
from tests.conftest import maintenance_connection, wait_until

T = TypeVar("T")

pytestmark = pytest.mark.django_db(transaction=True)


def sessions_left() -> list[tuple]:
    """Sessions in the test database other than Django's on this thread."""
    params = connection.settings_dict
    own = connection.connection
    ours = own.info.backend_pid if own is not None and not own.closed else 0
    with maintenance_connection(params) as admin:
        return admin.execute(
            "SELECT pid, application_name, state, left(query, 60) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> %s",
            [params["NAME"], ours],
        ).fetchall()


@pytest.fixture(autouse=True)
def no_session_left_open() -> Iterator[None]:
    """A test leaves no session open in the test database: one left on a thread that
    outlives the test (asgiref's executor, where the async ORM runs outside
    async_to_sync) kept the database from being dropped at the end of the run."""
    yield
    left: list[tuple] = []

    def none_left() -> bool:
        left[:] = sessions_left()
        return not left

    with contextlib.suppress(AssertionError):
        wait_until(none_left, timeout=5)
    assert not left, f"session(s) left open in the test database: {left}"


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coroutine)``, then close the connections the async ORM opened.

    Outside async_to_sync (Django's ASGI handler runs each request in a context of its
    own, and closes them at its end) the async ORM runs on asgiref's one thread for sync
    code, which outlives the test."""

    async def closing() -> T:
        try:
            return await coroutine
        finally:
            await sync_to_async(connections.close_all)()

    return asyncio.run(closing())


def test_inserts_and_state_changes_are_published_in_order(worker):
    with events.listen() as stream:
        job = add.enqueue(1, 2)
        worker.drain()
        seen = [
            (e.previous, e.state)
            for e in stream.iter(timeout=1, where=lambda e: e.job_id == job.pk)
        ]
    assert seen == [(None, "available"), ("available", "executing"), ("executing", "completed")]


NO_SECONDS = {"NaN": float("nan"), "a string": "5", "below 0": -1, "infinite": float("inf")}


@pytest.mark.parametrize("timeout", NO_SECONDS.values(), ids=list(NO_SECONDS))
def test_iter_and_first_refuse_a_timeout_that_is_no_number_of_seconds(db, timeout):
    """A NaN never ran out: no comparison with it is true, so the stream listened for
    ever (as job.wait() did before its timeout was checked); a string raised TypeError
    at the first event asked for. Refused when called, as wait()'s is."""
    with events.listen() as stream:
        with pytest.raises(InvalidOption, match="timeout must be a number of seconds"):
            stream.iter(timeout=timeout)
        with pytest.raises(InvalidOption, match="timeout must be a number of seconds"):
            stream.first(lambda event: True, timeout)
        assert list(stream.iter(timeout=0)) == []  # none: it stops at once


@pytest.mark.parametrize("using", [5, b"default", ["default"]])
def test_listen_refuses_an_alias_that_is_no_string(db, using):
    """listen(5) raised Python's "attribute name must be string, not 'int'" from deep in
    Django's connection handler; refused as the alias it is not, before any connection."""
    with pytest.raises(InvalidOption, match=r"^using must be a database alias \(a str\) or "):
        events.listen(using)
    with pytest.raises(InvalidOption, match=re.escape(repr(using))):
        events.EventStream(using)


def test_events_carry_the_task_queue_and_attempt(worker):
    with events.listen() as stream:
        job = always_fails.enqueue("x")
        worker.drain()
        event = stream.first(lambda e: e.job_id == job.pk and e.state == "retryable", timeout=2)
    assert event is not None
    assert (event.task, event.queue, event.attempt) == (job.task, "default", 1)


def test_django_signals_fire_in_the_process_where_the_transition_happens(worker):
    seen: list[tuple[str, int]] = []

    def receiver_for(name):
        def receiver(sender, job, **kwargs):
            seen.append((name, job.pk))

        return receiver

    receivers = {
        job_started: receiver_for("started"),
        job_completed: receiver_for("completed"),
        job_retrying: receiver_for("retrying"),
        job_discarded: receiver_for("discarded"),
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    try:
        ok = add.enqueue(1, 1)
        bad = Job.enqueue("testproject.demo.tasks.always_fails", max_attempts=1)
        worker.drain()
    finally:
        for signal, receiver in receivers.items():
            signal.disconnect(receiver)
    assert ("completed", ok.pk) in seen and ("discarded", bad.pk) in seen
    assert ("started", ok.pk) in seen and ("started", bad.pk) in seen


def test_wait_returns_at_once_for_a_finished_job(worker):
    job = add.enqueue(1, 1)
    worker.drain()
    assert job.wait(timeout=1).result == 2


def test_wait_times_out_with_a_clear_error():
    job = add.enqueue(1, 1)
    with pytest.raises(TimeoutError, match=f"job {job.pk} did not finish within 0.2s") as error:
        job.wait(timeout=0.2)
    # Where it stands: with no worker, a newcomer's wait() ran out with nothing saying why.
    assert str(error.value).endswith(
        ": it is available, on queue 'default' (no worker has taken it: "
        "is `manage.py runworker` running for that queue?)"
    )
    later = add.using(run_at=timezone.now() + timedelta(hours=1)).enqueue(1, 1)
    with pytest.raises(TimeoutError, match=r"0s: it is scheduled, on queue 'default'$"):
        later.wait(timeout=0)


def test_a_wait_in_the_transaction_that_enqueued_says_so(threaded_worker):
    # A newcomer's view under ATOMIC_REQUESTS enqueued and waited: no worker can see
    # the job before the commit, and the wait ran out asking whether a worker ran.
    threaded_worker()
    with transaction.atomic():
        job = add.enqueue(1, 1)
        with pytest.raises(TimeoutError) as error:
            job.wait(timeout=0.3)
    assert str(error.value).endswith(
        ": it is available, on queue 'default', and this wait runs inside a transaction "
        "(transaction.atomic() or ATOMIC_REQUESTS): workers see a job enqueued or retried "
        "in it only once it commits, so wait after the commit"
    )
    assert job.wait(timeout=10).result == 2  # committed: the worker runs it


def test_wait_returns_within_milliseconds_of_completion(threaded_worker):
    threaded_worker()
    delays = []
    for _ in range(5):
        job = Job.enqueue("testproject.demo.tasks.sleep", args=[0.2])
        done = job.wait(timeout=10)
        returned = time.time()
        assert done.state == JobState.COMPLETED and done.result == 0.2
        # finished_at is the worker's wall clock when it recorded the outcome.
        delays.append(returned - done.finished_at.timestamp())
    median = statistics.median(delays)
    print(f"wait() returned {median * 1000:.1f} ms (median) after completion")
    assert median < 0.05


def test_async_wait(threaded_worker):
    job = add.enqueue(20, 22)
    threaded_worker()

    result: list[Job] = []
    thread = threading.Thread(target=lambda: result.append(run_async(job.async_wait(timeout=10))))
    thread.start()
    thread.join(15)
    assert result and result[0].result == 42


def test_async_wait_is_told_of_the_outcome_not_left_to_its_look_at_the_row(threaded_worker):
    # Its LISTEN holds the listeners' lock, as events.listen()'s does: without it the
    # worker published nothing, and the wait ended at its next look (each second).
    threaded_worker()
    delays = []
    for _ in range(3):
        job = Job.enqueue("testproject.demo.tasks.sleep", args=[0.2])
        done = run_async(job.async_wait(timeout=10))
        delays.append(time.time() - done.finished_at.timestamp())
    assert statistics.median(delays) < 0.25, delays


async def asgi_get(path: str) -> bytes:
    """The body of a GET through Django's ASGI handler, as a server would drive it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
    }
    requested = asyncio.Event()
    sent: list[dict] = []

    async def receive() -> dict:
        if not requested.is_set():
            requested.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays until the answer is sent
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    await get_asgi_application()(scope, receive, send)
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.urls("tests.urls_async_wait")
def test_async_wait_in_an_asgi_app_leaves_no_connection_open():
    """A site's async view that waits, served by Django's ASGI handler: each request's
    ORM connection is closed at its end (request_finished, in the request's own
    thread), and async_wait closes the LISTEN connection it opened. The test database
    is left with no session (no_session_left_open), after 20 requests."""
    finished = add.enqueue(1, 1)
    finished.cancel()
    waiting = add.enqueue(1, 2)
    connection.close()

    async def requests() -> list[bytes]:
        pks = [finished.pk, waiting.pk] * 10
        return [await asgi_get(f"/wait/{pk}") for pk in pks]

    assert set(asyncio.run(requests())) == {b"cancelled", b"timeout"}


def test_a_large_batch_is_published_many_events_per_notification(second_connection):
    """10,000 inserted jobs of one task and queue cost 34 notifications, each under
    PostgreSQL's 8,000-byte payload limit, that together hold every event once, in order."""
    long_queue = Queue.objects.create(name="q" * 63).name
    second_connection.execute("LISTEN pgjobs_events")
    jobs = Job.enqueue_many(
        [{"task": "testproject.demo.tasks.add", "args": [i, i]} for i in range(10_000)]
        + [{"task": "testproject.demo.tasks.add", "args": [1, 2], "queue": long_queue}] * 100
    )
    payloads = wait_for_payloads(second_connection, until_events=len(jobs))
    assert len(payloads) == 34 + 1
    assert max(len(p.encode()) for p in payloads) < 8000
    ids = [event.job_id for payload in payloads for event in events.Event.parse(payload)]
    assert ids == [job.pk for job in jobs]


def test_a_large_batch_s_events_are_made_without_temp_files():
    """The trigger makes its payloads before it sorts them: sorted first, each of a
    batch's n/300 notifications carried its group's n ids (200,000 jobs wrote 1.1 GB
    of temp files). 40,000 jobs sorted 43 MB; now 134 payloads, in memory."""
    with transaction.atomic(), connection.cursor() as cursor:
        # Room for the statement's transition table and its grouping, not for that.
        cursor.execute("SET LOCAL work_mem = '16MB'")
        cursor.execute("SET LOCAL temp_file_limit = '1MB'")  # exceeded: an error
        jobs = Job.enqueue_many([{"task": "testproject.demo.tasks.add", "args": [1, 2]}] * 40_000)
    assert len(jobs) == Job.objects.count() == 40_000


def test_one_inserted_job_is_announced_as_a_batch_of_one_would_be(second_connection):
    """An INSERT of one row takes the trigger's short path: the same wake-up (none for a
    scheduled job) and the same event payload as the grouping queries write."""
    second_connection.execute("LISTEN pgjobs_events")
    second_connection.execute("LISTEN pgjobs_jobs")
    later = Job.enqueue(
        "testproject.demo.tasks.add", [1, 2], run_at=timezone.now() + timedelta(hours=1)
    )
    one = Job.enqueue("testproject.demo.tasks.add", args=[1, 2])
    pair = Job.enqueue_many([{"task": "testproject.demo.tasks.add", "args": [1, 2]}] * 2)
    received: list[tuple[str, str]] = []
    deadline = time.monotonic() + 10
    while sum(channel == "pgjobs_events" for channel, _ in received) < 3:
        assert time.monotonic() < deadline, received
        received += [(n.channel, n.payload) for n in second_connection.notifies(timeout=1)]
    assert [payload for channel, payload in received if channel == "pgjobs_jobs"] == [
        "default",
        "default",
    ]
    scheduled, single, batch = [
        json.loads(payload) for channel, payload in received if channel == "pgjobs_events"
    ]
    task = {"task": "testproject.demo.tasks.add", "queue": "default", "previous": None}
    assert scheduled == {"ids": [later.pk], **task, "state": "scheduled", "attempt": 0}
    assert single == {"ids": [one.pk], **task, "state": "available", "attempt": 0}
    assert batch == {"ids": [job.pk for job in pair], **task, "state": "available", "attempt": 0}
    assert list(single) == list(batch)  # same keys in the same order


def _received(conn: psycopg.Connection, events: int) -> list[tuple[str, str]]:
    received: list[tuple[str, str]] = []
    deadline = time.monotonic() + 10
    while sum(channel == "pgjobs_events" for channel, _ in received) < events:
        assert time.monotonic() < deadline, received
        received += [(n.channel, n.payload) for n in conn.notifies(timeout=1)]
    return received


_ONE_ROW_INSERT = (
    "INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt,"
    " max_attempts, run_at, created_at, errors, pending_dependencies, meta)"
    " VALUES ('testproject.demo.tasks.add', 'default', '[1, 2]', '{}', 'available', 0, 0,"
    " 3, now(), now(), '[]', 0, '{}') RETURNING id"
)


def _trigger_runs(cursor: Any) -> int:
    cursor.execute("SELECT pg_stat_get_xact_function_calls('pgjobs_announce_inserted'::regproc)")
    return cursor.fetchone()[0] or 0


def test_enqueue_announces_its_job_with_the_bytes_the_trigger_sends(second_connection):
    """pgjobs_insert_job (Job.enqueue's one job) sends its wake-up and event itself, the
    trigger skipping its INSERT: the same notifications, byte for byte, as the trigger
    sends for a one-row INSERT written in SQL; and the mark it skips by is cleared, so
    an INSERT after it in the same transaction is announced."""
    second_connection.execute("LISTEN pgjobs_events")
    second_connection.execute("LISTEN pgjobs_jobs")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL track_functions = 'pl'")  # counted for this transaction
        enqueued = Job.enqueue("testproject.demo.tasks.add", args=[1, 2])
        assert _trigger_runs(cursor) == 0
        cursor.execute(_ONE_ROW_INSERT)
        written = cursor.fetchone()[0]
        assert _trigger_runs(cursor) == 1
    # Two transactions' worth, so PostgreSQL folds neither pair of notifications.
    with connection.cursor() as cursor:
        cursor.execute(_ONE_ROW_INSERT)
        alone = cursor.fetchone()[0]
    received = _received(second_connection, 3)
    events = [payload for channel, payload in received if channel == "pgjobs_events"]
    assert [channel for channel, _ in received].count("pgjobs_jobs") == 2  # one per commit
    by_function, in_the_same_transaction, by_trigger = events
    assert by_function.replace(str(enqueued.pk), "ID") == by_trigger.replace(str(alone), "ID")
    assert json.loads(in_the_same_transaction)["ids"] == [written]


def test_an_insert_a_trigger_makes_during_an_enqueue_is_announced(second_connection):
    """The mark pgjobs_insert_job sets around its INSERT doesn't silence an INSERT into
    the job table that another trigger makes while that INSERT runs."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION pgjobs_test_follow_up() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN"
            "  IF NEW.task <> 'testproject.demo.tasks.add' THEN RETURN NULL; END IF;"
            "  INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt,"
            "   max_attempts, run_at, created_at, errors, pending_dependencies, meta)"
            "  VALUES ('testproject.demo.tasks.send_welcome', 'mail', '[]', '{}', 'available',"
            "   0, 0, 3, now(), now(), '[]', 0, '{}');"
            "  RETURN NULL;"
            " END $$"
        )
    second_connection.execute("LISTEN pgjobs_events")
    second_connection.execute("LISTEN pgjobs_jobs")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TRIGGER follow_up AFTER INSERT ON pgjobs_job"
            " FOR EACH ROW EXECUTE FUNCTION pgjobs_test_follow_up()"
        )
        try:
            enqueued = Job.enqueue("testproject.demo.tasks.add", args=[1, 2])
        finally:
            cursor.execute("DROP TRIGGER follow_up ON pgjobs_job")
            cursor.execute("DROP FUNCTION pgjobs_test_follow_up()")
    received = _received(second_connection, 2)
    assert sorted(payload for channel, payload in received if channel == "pgjobs_jobs") == [
        "default",
        "mail",
    ]
    events = [json.loads(p) for channel, p in received if channel == "pgjobs_events"]
    follow_up = Job.objects.get(task="testproject.demo.tasks.send_welcome")
    assert sorted(event["ids"][0] for event in events) == sorted([enqueued.pk, follow_up.pk])


def test_a_failed_enqueue_leaves_no_mark_behind(second_connection):
    """An INSERT of pgjobs_insert_job's that fails (here a CHECK) rolls back, with the
    caller's savepoint, the mark that makes the trigger skip it."""
    second_connection.execute("LISTEN pgjobs_events")
    with transaction.atomic(), connection.cursor() as cursor:
        with pytest.raises(IntegrityError), transaction.atomic():
            cursor.execute(
                "SELECT pgjobs_insert_job('testproject.demo.tasks.add', 'default', '[]',"
                " '{}', 'available', 0, 0, NULL, now(), now(), NULL, NULL, 0, '{}')"
            )  # max_attempts 0
        cursor.execute("SELECT current_setting('pgjobs.announced', true)")
        assert cursor.fetchone()[0] in (None, "")
        cursor.execute(_ONE_ROW_INSERT)
        written = cursor.fetchone()[0]
    received = _received(second_connection, 1)
    assert [json.loads(p)["ids"] for _, p in received] == [[written]]


def test_an_operator_s_bulk_change_names_each_job_with_its_own_task_and_queue(
    second_connection,
):
    """One UPDATE of jobs of two tasks in two queues: every event carries its own job's."""
    other = Queue.objects.create(name="other").name
    jobs = Job.enqueue_many(
        [
            {
                "task": "testproject.demo.tasks.add",
                "args": [1, 2],
                "queue": other if i % 3 else None,
            }
            for i in range(50)
        ]
        + [{"task": "testproject.demo.tasks.always_fails"} for _ in range(7)]
    )
    second_connection.execute("LISTEN pgjobs_events")
    Job.objects.filter(pk__in=[job.pk for job in jobs]).update(state="cancelled")
    payloads = wait_for_payloads(second_connection, until_events=len(jobs))
    seen = {
        event.job_id: (event.task, event.queue, event.previous, event.state)
        for payload in payloads
        for event in events.Event.parse(payload)
    }
    assert seen == {job.pk: (job.task, job.queue, "available", "cancelled") for job in jobs}


def test_a_change_from_a_session_that_never_ran_a_worker_statement_is_published(
    second_connection,
):
    """A fresh session has no pgjobs.publisher setting at all (it reads as NULL)."""
    job = Job.enqueue("testproject.demo.tasks.add", args=[1, 2])
    second_connection.execute("LISTEN pgjobs_events")
    with psycopg.connect(**db.connection_params(), autocommit=True) as fresh:
        fresh.execute("UPDATE pgjobs_job SET state = 'cancelled' WHERE id = %s", [job.pk])
    payloads = wait_for_payloads(second_connection, until_events=1)
    assert [(e.job_id, e.state) for p in payloads for e in events.Event.parse(p)] == [
        (job.pk, "cancelled")
    ]


def wait_for_payloads(conn, until_events: int, timeout: float = 10.0) -> list[str]:
    payloads: list[str] = []
    seen, deadline = 0, time.monotonic() + timeout
    while seen < until_events and time.monotonic() < deadline:
        for notify in conn.notifies(timeout=max(0.0, deadline - time.monotonic())):
            if notify.channel == "pgjobs_events":
                payloads.append(notify.payload)
                seen += len(events.Event.parse(notify.payload))
            if seen >= until_events:
                break
    return payloads


def test_the_worker_s_payloads_stay_under_the_limit_for_the_longest_names():
    """Worst case: 300 ids of 19 digits, a task name of 255 four-byte characters."""
    task = "\U0001f600" * 255
    runs = [
        ((task, "q" * 63, "executing", "available", 2147483647), list(range(10**18, 10**18 + 900)))
    ]
    found = events.payloads(runs)
    assert len(found) == 3
    assert max(len(payload.encode()) for payload in found) < 8000
    assert [e.job_id for p in found for e in events.Event.parse(p)] == runs[0][1]


def test_one_claim_tells_each_job_the_state_it_was_claimed_from(worker):
    """claim.sql looks each job's previous state up among the claimed ids sorted: jobs
    claimed out of id order (by priority) from three states each get their own."""
    from django_pgjobs import transitions

    retried = add.enqueue(0, 0)
    now = timezone.now() + timedelta(seconds=1)
    [claimed] = worker.claim(1, now, publish=False)
    transitions.finish([transitions.failed(claimed, RuntimeError("x"), now, run_at=now)])
    later = now + timedelta(hours=1)
    jobs = [Job.enqueue("testproject.demo.tasks.add", args=[i, i], priority=i) for i in range(4)]
    scheduled = Job.enqueue("testproject.demo.tasks.add", args=[9, 9], run_at=later, priority=2)
    claimed = worker.claim(10, later + timedelta(seconds=1), publish=False)
    previous = {job.pk: job.previous for job in claimed}
    assert previous == {
        **{job.pk: "available" for job in jobs},
        scheduled.pk: "scheduled",
        retried.pk: "retryable",
    }
    assert [job.pk for job in claimed][:2] == [jobs[3].pk, jobs[2].pk]


# -- wait() on a job whose row is gone ------------------------------------------------------


@pytest.mark.parametrize("events_on", [True, False])
def test_wait_on_a_deleted_job_says_it_is_gone(settings, events_on):
    settings.PGJOBS = {**settings.PGJOBS, "EVENTS": events_on}
    job = add.enqueue(1, 1)
    Job.objects.filter(pk=job.pk).delete()
    gone = f"job {job.pk} no longer exists (it was deleted or pruned)"
    with pytest.raises(JobGone, match=re.escape(gone)):
        job.wait(timeout=5)
    with pytest.raises(JobGone, match=re.escape(gone)):
        run_async(job.async_wait(timeout=5))


@pytest.mark.parametrize("action", ["wait", "async_wait", "retry", "cancel"])
def test_a_job_deleted_by_its_own_delete_is_said_gone_not_never_saved(action):
    """Django clears the pk on delete(): the job then said it "was never saved". Its
    row is gone, as for one deleted by a queryset: JobGone, saying how (no id left)."""
    job = add.enqueue(1, 1)
    job.delete()
    gone = "the job no longer exists (it was deleted: delete() clears its id)"
    with pytest.raises(JobGone, match=re.escape(gone)):
        if action == "async_wait":
            run_async(job.async_wait(timeout=5))
        else:
            getattr(job, action)()
    with pytest.raises(InvalidOption, match="was never saved"):  # as before
        getattr(Job(task=add.name), action if action != "async_wait" else "wait")()


def listening() -> bool:
    """Whether a connection of this database listens for events (a wait started)."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query ILIKE 'LISTEN%%' AND state = 'idle'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.parametrize("how", ["wait", "async_wait"])
def test_a_wait_ends_soon_after_its_job_is_deleted(how):
    """No event says a job was deleted: wait() looks at the row each WAIT_CHECK_EVERY
    seconds while none comes, instead of waiting out its timeout (or forever)."""
    job = add.enqueue(1, 1)
    raised: list[BaseException] = []

    def waiting() -> None:
        try:
            if how == "wait":
                job.wait(timeout=30)
            else:
                run_async(job.async_wait(timeout=30))
        except BaseException as error:  # handed to the test, whatever it is
            raised.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=waiting)
    thread.start()
    wait_until(listening)  # deleted while it waits, not before
    Job.objects.filter(pk=job.pk).delete()
    deleted = time.monotonic()
    thread.join(10)
    assert not thread.is_alive()
    assert raised and isinstance(raised[0], JobGone), raised
    assert time.monotonic() - deleted < WAIT_CHECK_EVERY + 2


def _worker_events(conn: psycopg.Connection, job_id: int, seconds: float) -> list[str]:
    """The states of ``job_id``'s events after its insert that ``conn`` hears in ``seconds``."""
    heard = []
    for notify in conn.notifies(timeout=seconds):
        heard += [e.state for e in events.Event.parse(notify.payload) if e.job_id == job_id]
    return [state for state in heard if state != "available"]


def test_a_worker_publishes_its_claims_and_outcomes_only_while_someone_listens(
    threaded_worker, second_connection, wait
):
    # Building, sending and committing them cost a draining worker a fifth of its CPU
    # per job; a session that listens holds the listeners' lock, which workers look for.
    threaded_worker()
    second_connection.execute("LISTEN pgjobs_events")  # not holding the lock
    unheard = add.enqueue(1, 2)
    wait(lambda: Job.objects.get(pk=unheard.pk).state == JobState.COMPLETED, timeout=10)
    assert _worker_events(second_connection, unheard.pk, 0.5) == []

    events.hold_listeners_lock(second_connection)  # what events.listen() does
    heard = add.enqueue(2, 3)
    wait(lambda: Job.objects.get(pk=heard.pk).state == JobState.COMPLETED, timeout=10)
    deadline = time.monotonic() + 10
    states: list[str] = []
    while len(states) < 2 and time.monotonic() < deadline:
        states += _worker_events(second_connection, heard.pk, 0.5)
    assert states == ["executing", "completed"]


def test_a_listener_that_returned_hears_every_later_outcome(threaded_worker):
    threaded_worker()
    for _ in range(3):
        with events.listen() as stream:
            job = add.enqueue(1, 1)
            done = stream.first(lambda e, pk=job.pk: e.job_id == pk and e.state == "completed", 10)
        assert done is not None
