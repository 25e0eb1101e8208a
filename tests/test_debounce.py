"""Debounce by key: the pending job of a key takes the newest arguments and waits
again, instead of a job per call; atomic under concurrency (issue 20, item 4)."""

from __future__ import annotations

import math
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_pgjobs import InvalidOption, Job
from django_pgjobs.enqueue import JobSpec
from django_pgjobs.states import JobState
from django_pgjobs.worker import Worker
from testproject.demo.tasks import add
from tests.tasks_for_tests import unique_report

ADD = "testproject.demo.tasks.add"


def pending(key: str) -> list[Job]:
    return list(Job.objects.filter(meta__debounce__key=key, state__in=["scheduled", "available"]))


@pytest.mark.django_db
def test_calls_within_the_window_make_one_job_with_the_last_arguments():
    first = Job.enqueue(ADD, args=[1, 1], debounce_key="cart-7", debounce=5)
    assert not first.is_duplicate and first.state == JobState.SCHEDULED
    before = timezone.now()
    second = Job.enqueue(ADD, args=[2, 2], debounce_key="cart-7", debounce=5)
    third = Job.enqueue(ADD, args=[3, 3], debounce_key="cart-7", debounce=5, priority=4)
    assert second.is_duplicate and third.is_duplicate and third.pk == first.pk
    (job,) = pending("cart-7")
    assert job.args == [3, 3] and job.priority == 4
    assert job.run_at >= before + timedelta(seconds=5), "each call restarts the wait"
    assert job.meta["debounce"] == {"key": "cart-7", "seconds": 5.0}
    # Other keys and other queues are other jobs.
    other = Job.enqueue(ADD, args=[1, 1], debounce_key="cart-8", debounce=5)
    elsewhere = Job.enqueue(ADD, args=[1, 1], debounce_key="cart-7", debounce=5, queue="mail")
    assert len({first.pk, other.pk, elsewhere.pk}) == 3


@pytest.mark.django_db
def test_the_job_runs_once_after_the_window_with_the_last_arguments():
    for n in range(3):
        Job.enqueue(ADD, args=[n, n], debounce_key="k", debounce=2)
    worker = Worker(concurrency=2)
    assert worker.drain() == {}  # not due yet
    ran = worker.drain(now=timezone.now() + timedelta(seconds=3))
    assert ran == {"completed": 1}
    assert Job.objects.get().result == 4


@pytest.mark.django_db
def test_a_call_after_the_job_started_adds_a_job_so_its_work_is_not_lost():
    first = Job.enqueue(ADD, args=[1, 1], debounce_key="k", debounce=1)
    claimed = Worker(concurrency=1).claim(1, timezone.now() + timedelta(seconds=2))
    assert [j.pk for j in claimed] == [first.pk]
    later = Job.enqueue(ADD, args=[2, 2], debounce_key="k", debounce=1)
    assert later.pk != first.pk and not later.is_duplicate


@pytest.mark.django_db(transaction=True)
def test_twenty_threads_of_one_key_make_exactly_one_pending_job():
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def call(n: int) -> None:
        try:
            barrier.wait(10)
            Job.enqueue(ADD, args=[n, n], debounce_key="burst", debounce=30)
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    (job,) = pending("burst")
    assert Job.objects.count() == 1 and job.args[0] in range(20)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "options, field",
    [
        ({"debounce_key": "k"}, "debounce"),
        ({"debounce": 5}, "debounce_key"),
        ({"debounce_key": "", "debounce": 5}, "debounce_key"),
        ({"debounce_key": "k\x00", "debounce": 5}, "debounce_key"),
        ({"debounce_key": "k", "debounce": -1}, "debounce"),
        ({"debounce_key": "k", "debounce": math.nan}, "debounce"),
        ({"debounce_key": "k", "debounce": "5"}, "debounce"),
        ({"debounce_key": "k", "debounce": 5, "unique_key": "u"}, "debounce_key"),
        ({"debounce_key": "k", "debounce": 5, "run_at": timezone.now()}, "debounce_key"),
    ],
)
def test_odd_debounce_options_are_refused_with_nothing_written(options, field):
    with transaction.atomic():
        with pytest.raises(InvalidOption) as refused:
            Job.enqueue(ADD, args=[1, 1], **options)
        assert refused.value.field == field
        assert Job.objects.count() == 0  # and the transaction is still usable


@pytest.mark.django_db
@pytest.mark.parametrize(
    "options, said",
    [
        # It said "debounce_key must be a string, not NoneType None" of a key never given.
        (
            {"debounce": 5},
            "debounce_key is missing: debounce=5 needs a debounce_key, the key whose calls "
            "it makes one job of",
        ),
        (
            {"debounce_key": "k"},
            "debounce is missing: debounce_key='k' needs debounce, the seconds to wait after "
            "the last call",
        ),
    ],
)
def test_half_a_debounce_says_what_is_missing(options, said):
    for enqueue in (
        lambda: Job.enqueue(ADD, args=[1, 1], **options),
        lambda: add.using(**options).enqueue(1, 1),
        lambda: Job.enqueue_many([{"task": ADD, "args": [1, 1], **options}]),
    ):
        with pytest.raises(InvalidOption) as refused:
            enqueue()
        assert str(refused.value) == said
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_unique_task_can_not_be_debounced():
    with pytest.raises(InvalidOption, match="unique key"):
        unique_report.using(debounce_key="k", debounce=1).enqueue(1)


@pytest.mark.django_db
def test_the_pending_job_is_found_through_its_index():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT * FROM pgjobs_job WHERE queue = 'default'"
            " AND (meta -> 'debounce' ->> 'key') = 'k' AND state IN ('scheduled', 'available')"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "pgjobs_job_debounce_pending" in plan, plan


@pytest.mark.django_db
def test_a_batch_of_one_key_writes_its_pending_job_once(django_assert_max_num_queries):
    """Each call of a key in one enqueue_many updated the pending job again, and in one
    transaction each update made the next lookup of the row longer: 8,000 calls took
    104 s, the last 1,000 of them 30 s against 3.7 s for the first. Now the batch's
    first call of a key finds (or makes) its pending job, and the last one's
    arguments are written to it once."""
    old = Job.enqueue(ADD, args=[0, 0], debounce_key="old", debounce=5)
    specs = [JobSpec(ADD, [n, n], debounce_key=key, debounce=5) for n in range(1, 51)
             for key in ("burst", "old")]  # fmt: skip
    with django_assert_max_num_queries(12):  # 3 or 4 a call before: 300 and more
        jobs = Job.enqueue_many(specs)
    burst, olds = jobs[0::2], jobs[1::2]
    assert [job.is_duplicate for job in burst] == [False] + [True] * 49
    assert all(job.is_duplicate and job.pk == old.pk for job in olds)
    assert len({job.pk for job in burst}) == 1
    assert [job.args for job in burst] == [[n, n] for n in range(1, 51)]
    ((made,), (kept,)) = pending("burst"), pending("old")
    assert made.pk == burst[0].pk and made.args == [50, 50]
    assert kept.pk == old.pk and kept.args == [50, 50] and kept.run_at == olds[-1].run_at


@pytest.mark.django_db
def test_calls_in_the_callers_transaction_make_no_subtransaction_each():
    """Each debounced call in a transaction opened a savepoint, so each version of the
    key's pending job it left was a subtransaction's, and every later lookup and update
    of the row paid several times as much to step over it: 4,000 calls of one key in
    one transaction took 28 s, 9 s without (the row's versions still add up: see
    docs/flow-control.md#debounce). A version's xmin says which transaction wrote it."""
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        jobs = [Job.enqueue(ADD, args=[n, n], debounce_key="k", debounce=5) for n in range(3)]
        plain = Job.enqueue(ADD, args=[0, 0])  # written in the caller's transaction
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT xmin::text FROM pgjobs_job WHERE id = ANY(%s)",
                [[jobs[0].pk, plain.pk]],
            )
            writers = cursor.fetchall()
    assert not [q["sql"] for q in queries if "SAVEPOINT" in q["sql"]]
    assert len(writers) == 1, "the pending job's last version is the caller's transaction's"
    assert [job.is_duplicate for job in jobs] == [False, True, True]
    (job,) = pending("k")
    assert job.pk == jobs[0].pk and job.args == [2, 2]


@pytest.mark.django_db
def test_a_savepoint_rolled_back_between_calls_takes_its_calls_with_it():
    """Calls of a key in the caller's transaction keep no state of their own: what a
    rolled-back savepoint undid (an update of the pending job, or its insert) is
    found undone by the next call."""
    with transaction.atomic():
        first = Job.enqueue(ADD, args=[1, 1], debounce_key="k", debounce=5)
        with pytest.raises(RuntimeError), transaction.atomic():
            Job.enqueue(ADD, args=[2, 2], debounce_key="k", debounce=5)
            raise RuntimeError("undo")
        third = Job.enqueue(ADD, args=[3, 3], debounce_key="k", debounce=5)
        with pytest.raises(RuntimeError), transaction.atomic():
            Job.enqueue(ADD, args=[1, 1], debounce_key="gone", debounce=5)
            raise RuntimeError("undo")
        again = Job.enqueue(ADD, args=[4, 4], debounce_key="gone", debounce=5)
    assert third.is_duplicate and third.pk == first.pk
    (job,) = pending("k")
    assert job.args == [3, 3] and job.run_at == third.run_at
    assert not again.is_duplicate and [j.pk for j in pending("gone")] == [again.pk]
