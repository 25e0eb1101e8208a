"""Rate limits per key: at most N jobs of one concurrency key start in any window,
across worker processes, while other keys' jobs run beside them (issue 20, item 1)."""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict

import pytest
from django.db import transaction
from django.db.models.expressions import RawSQL
from django.urls import reverse

from django_pgjobs import InvalidOption, Job, ratelimits, task
from django_pgjobs.enqueue import COPY_AT_LEAST
from django_pgjobs.models import Queue, RateWindow
from django_pgjobs.states import JobState
from django_pgjobs.worker import Worker
from tests.test_flow_rates import most_in_any_window

S = JobState
ADD = "testproject.demo.tasks.add"
PER_ACCOUNT = "tests.tasks_for_flow.per_account"


def key_rated_queue(limit: int, period: float = 1.0, name: str = "rated", **options) -> Queue:
    return Queue.objects.create(name=name, key_rate_limit=limit, key_rate_period=period, **options)


def enqueue(key: str | None, count: int, queue: str = "rated") -> list[Job]:
    return Job.enqueue_many(
        [
            {"task": ADD, "args": [n, 1], "queue": queue, "concurrency_key": key}
            for n in range(count)
        ]
    )


def states(jobs: list[Job]) -> list[tuple[str, int]]:
    return sorted(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("state", "attempt"))


@pytest.mark.django_db
def test_a_key_at_its_rate_limit_waits_unclaimed_while_other_keys_start():
    key_rated_queue(3, 3600.0)
    hot, cold, plain = enqueue("hot", 10), enqueue("cold", 2), enqueue(None, 2)
    worker = Worker(["rated"], concurrency=50)
    assert worker.drain() == {"completed": 3 + 2 + 2}
    assert worker.drain() == {}, "the hot key's window is full for an hour"
    assert states(hot) == [(S.AVAILABLE, 0)] * 7 + [(S.COMPLETED, 1)] * 3, "no attempt burnt"
    assert states(cold) == states(plain) == [(S.COMPLETED, 1)] * 2
    window = RateWindow.objects.get(scope=ratelimits.key_scope("rated") + "hot")
    assert len(window.starts) == 3
    assert worker._claimer.room_at is not None, "a held-back key wakes the worker within its period"

    Queue.objects.filter(name="rated").update(key_rate_limit=5)  # live: the next claim
    assert worker.drain() == {"completed": 2}
    Queue.objects.filter(name="rated").update(key_rate_limit=None)  # removed: the old path
    assert worker.drain() == {"completed": 5}


@pytest.mark.django_db
def test_key_windows_of_two_queues_are_apart_and_both_limits_hold():
    key_rated_queue(2, 3600.0, name="a")
    key_rated_queue(2, 3600.0, name="b", key_concurrency=1, rate_limit=100)
    enqueue("k", 3, queue="a")
    enqueue("k", 3, queue="b")
    worker = Worker(["a", "b"], concurrency=50)
    claimed = worker.claim(50)
    by_queue = defaultdict(int)
    for job in claimed:
        by_queue[job.queue] += 1
    assert by_queue == {"a": 2, "b": 1}, "b's key_concurrency 1 holds beside its key rate"
    assert {w.scope for w in RateWindow.objects.all()} >= {"key:a/k", "key:b/k", "queue:b"}


@pytest.mark.django_db
def test_a_task_derives_its_jobs_key_from_their_arguments():
    from tests.tasks_for_flow import one_key_for_all, per_account

    assert per_account.enqueue(42, n=1).meta["concurrency_key"] == "account-42"
    assert per_account.using(concurrency_key="vip").enqueue(42).meta["concurrency_key"] == "vip"
    assert one_key_for_all.enqueue().meta["concurrency_key"] == "reports"
    many = Job.enqueue_many([{"task": PER_ACCOUNT, "args": [n % 3]} for n in range(COPY_AT_LEAST)])
    metas = Job.objects.filter(pk__in=[j.pk for j in many]).values_list("meta", flat=True)
    assert {meta["concurrency_key"] for meta in metas} == {"account-0", "account-1", "account-2"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["raises", "int", "empty", "long", "nul", "list"])
def test_a_key_function_that_fails_refuses_the_enqueue_and_writes_nothing(kind):
    odd = {"task": "tests.tasks_for_flow.odd_key", "args": [kind]}
    fine = {"task": PER_ACCOUNT, "args": [1]}
    for batch in ([odd], [fine] * 3 + [odd], [fine] * COPY_AT_LEAST + [odd]):
        with pytest.raises(
            InvalidOption, match=r"concurrency_key of tests\.tasks_for_flow\.odd_key"
        ):
            Job.enqueue_many(batch)
    with transaction.atomic():  # the caller's transaction stays usable
        with pytest.raises(InvalidOption):
            Job.enqueue_many([fine, odd])
        Job.enqueue(PER_ACCOUNT, args=[2])
    assert list(Job.objects.values_list("args", flat=True)) == [[2]]


def test_odd_task_keys_are_refused_at_definition():
    for odd in ("", 7, "k" * 256, "a\x00"):
        with pytest.raises(InvalidOption, match="concurrency_key"):
            task(concurrency_key=odd)(lambda: None)


@pytest.mark.django_db
def test_a_key_longer_than_enqueue_writes_is_limited_as_any_key_and_stops_nothing():
    """A key written by SQL past the 255 characters enqueue takes: its window's scope
    (varchar(400)) could not hold it, and every claim of its queue failed with
    DataError, so no job of the queue ran again. Its window is named by its digest."""
    key_rated_queue(1, 3600.0)
    long, longer = "k" * 100_000, "k" * 100_001
    odd = enqueue("odd", 2) + enqueue("odder", 1)
    for job, key in zip(odd, [long, long, longer], strict=True):
        meta = json.dumps({"concurrency_key": key})
        Job.objects.filter(pk=job.pk).update(meta=RawSQL("%s::jsonb", [meta]))
    plain, fits = enqueue(None, 1), enqueue("k" * 255, 2)
    worker = Worker(["rated"], concurrency=50)
    assert worker.drain() == {"completed": 4}, "one job of each key, and the plain one"
    assert worker.drain() == {}, "each key's window is full for an hour"
    assert states(plain) == [(S.COMPLETED, 1)]
    assert states(odd) == [(S.AVAILABLE, 0)] + [(S.COMPLETED, 1)] * 2  # long, long, longer
    assert states(fits) == [(S.AVAILABLE, 0), (S.COMPLETED, 1)]
    scopes = set(RateWindow.objects.values_list("scope", flat=True))
    assert scopes == {"key:rated/" + "k" * 255} | {
        "key:rated/md5:" + hashlib.md5(key.encode()).hexdigest() for key in (long, longer)
    }


# Odd key_rate_limit and key_rate_period values: tests/test_flow_rates.py's refusal
# tests run over both pairs of fields.


@pytest.mark.django_db
def test_the_queue_admin_edits_the_per_key_limits_and_shows_them(admin_client):
    Queue.objects.get_or_create(name="default")
    url = reverse("admin:pgjobs_queue_change", args=["default"])
    form = admin_client.get(url).content.decode()
    assert "key_rate_limit" in form and "key_concurrency" in form
    refused = admin_client.post(url, {"priority": 0, "key_rate_limit": "5", "key_rate_period": "0"})
    assert refused.status_code == 200
    assert "key_rate_period" in refused.context["adminform"].form.errors
    assert Queue.objects.get(name="default").key_rate_limit is None, "nothing written"
    data = {"priority": 0, "key_rate_limit": "5", "key_rate_period": "60", "key_concurrency": "2"}
    assert admin_client.post(url, data).status_code == 302
    page = admin_client.get(reverse("admin:pgjobs_queue_changelist")).content.decode()
    assert "5 per key per 1 min" in page and "2 per key at once" in page


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_four_worker_processes_start_at_most_n_of_a_key_per_second(worker_process, wait):
    """One hot key limited to 10 per second, ten quiet keys and keyless jobs beside it,
    on four worker processes: every key within its limit in every window (by the
    database's clock), the others done long before the hot one, none lost or rerun."""
    key_rated_queue(10, 1.0)
    jobs = enqueue("hot", 60)
    for n in range(10):
        jobs += enqueue(f"quiet-{n}", 5)
    jobs += enqueue(None, 20)
    started = time.monotonic()
    workers = [worker_process("--queues", "rated", "--concurrency", "5") for _ in range(4)]
    done = Job.objects.filter(state=S.COMPLETED)
    wait(lambda: done.count() == len(jobs), timeout=60)
    took = time.monotonic() - started
    assert [w.stop() for w in workers] == [0, 0, 0, 0]

    rows = list(done.values("meta", "attempt", "attempted_at", "finished_at"))
    assert len(rows) == len(jobs) and {row["attempt"] for row in rows} == {1}, "none lost/rerun"
    starts = defaultdict(list)
    for row in rows:
        starts[row["meta"].get("concurrency_key")].append(row["attempted_at"])
    assert most_in_any_window(starts["hot"], 1.0) == 10
    keyless = starts.pop(None)
    assert len(starts) == 11 and all(most_in_any_window(t, 1.0) <= 10 for t in starts.values())
    assert len(keyless) == 20, "jobs without a key are not limited by it"
    span = (max(starts["hot"]) - min(starts["hot"])).total_seconds()
    assert span >= 60 / 10 - 1, "at most 10 of the hot key per second"
    assert took < 2 * 60 / 10 + 15, f"the hot key's room is used as it comes: {took:.1f}s"
    hot_done = max(
        row["finished_at"] for row in rows if row["meta"].get("concurrency_key") == "hot"
    )
    others_done = max(
        row["finished_at"] for row in rows if row["meta"].get("concurrency_key") != "hot"
    )
    assert others_done < hot_done
