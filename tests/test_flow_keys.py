"""Per-key concurrency: at most N jobs of one key executing at once, across workers,
while other keys' jobs run beside them (issue 20, item 2)."""

from __future__ import annotations

import threading
from collections import defaultdict

import psycopg
import pytest

from django_pgjobs import InvalidOption, Job, db
from django_pgjobs.models import Queue
from django_pgjobs.queues import check_options
from django_pgjobs.states import JobState
from django_pgjobs.worker import Worker

ADD = "testproject.demo.tasks.add"
SLEEP = "tests.tasks_for_tests.blocked"


def keyed_queue(name: str = "keyed", limit: int = 2, **options) -> Queue:
    return Queue.objects.create(name=name, key_concurrency=limit, **options)


def enqueue(key: str | None, count: int, task: str = ADD, args=(1, 1), queue="keyed") -> None:
    Job.enqueue_many(
        [{"task": task, "args": list(args), "queue": queue, "concurrency_key": key}] * count
    )


@pytest.mark.django_db
def test_a_claim_takes_at_most_n_of_a_key_and_every_other_key_beside():
    keyed_queue(limit=2)
    enqueue("noisy", 10)
    enqueue("quiet", 3)
    enqueue(None, 2)
    worker = Worker(["keyed"], concurrency=50)
    claimed = worker.claim(50)
    keys = defaultdict(int)
    for job in claimed:
        keys[job.meta.get("concurrency_key")] += 1
    assert keys == {"noisy": 2, "quiet": 2, None: 2}
    assert worker.claim(50) == [], "both keys are at their limit while those run"
    Job.objects.filter(pk=claimed[0].pk).update(state=JobState.COMPLETED)
    again = worker.claim(50)
    assert [job.meta["concurrency_key"] for job in again] == [claimed[0].meta["concurrency_key"]]


@pytest.mark.django_db
def test_the_queue_limit_still_holds_with_a_key_limit():
    keyed_queue(limit=3, concurrency=4)
    enqueue("a", 5)
    enqueue("b", 5)
    assert len(Worker(["keyed"], concurrency=50).claim(50)) == 4


@pytest.mark.django_db
def test_odd_key_limits_and_keys_are_refused():
    for odd in (0, -1, 2**31, "2", 1.5, True):
        with pytest.raises(InvalidOption, match="key_concurrency"):
            check_options("q", {"key_concurrency": odd})
    with pytest.raises(InvalidOption, match="key_concurrency"):
        check_options("q", {"blocking": True, "key_concurrency": 2})
    for odd in ("", "a\x00", 7, "x" * 300):
        with pytest.raises(InvalidOption, match="concurrency_key"):
            Job.enqueue(ADD, args=[1, 1], concurrency_key=odd)
    assert Job.objects.count() == 0


class KeySampler(threading.Thread):
    """Counts, every few milliseconds, the executing jobs of each key in the database:
    the most seen at once, per key."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.most: dict[str, int] = defaultdict(int)
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(**db.connection_params(), autocommit=True) as conn:
            while not self.done.is_set():
                for key, count in conn.execute(
                    "SELECT meta ->> 'concurrency_key', count(*) FROM pgjobs_job"
                    " WHERE state = 'executing' GROUP BY 1"
                ):
                    self.most[key] = max(self.most[key], count)
                self.samples += 1
                self.done.wait(0.005)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_noisy_key_never_starves_the_others_across_four_workers(worker_process, wait):
    keyed_queue(limit=2)
    enqueue("noisy", 120, task=SLEEP, args=[0.05])
    for n in range(10):
        enqueue(f"quiet-{n}", 4, task=SLEEP, args=[0.05])
    total = 120 + 40
    sampler = KeySampler()
    sampler.start()
    workers = [worker_process("--queues", "keyed", "--concurrency", "5") for _ in range(4)]
    done = Job.objects.filter(state=JobState.COMPLETED)
    wait(lambda: done.count() == total, timeout=120)
    sampler.done.set()
    sampler.join(5)
    assert [w.stop() for w in workers] == [0, 0, 0, 0]

    rows = list(done.values("meta", "finished_at", "attempt"))
    assert len(rows) == total and {row["attempt"] for row in rows} == {1}, "none lost or rerun"
    # Never more than 2 of a key executing at once, in the database, across 4 processes.
    assert sampler.samples > 50 and sampler.most["noisy"] == 2, dict(sampler.most)
    assert max(sampler.most.values()) == 2, dict(sampler.most)
    # Fair: the quiet keys' 40 jobs (2 at a time each) are done long before the
    # noisy key's 120 (2 at a time: ~60 rounds of 50 ms).
    finished = defaultdict(list)
    for row in rows:
        finished[row["meta"]["concurrency_key"]].append(row["finished_at"])
    first = min(min(times) for times in finished.values())
    quiet_done = max(max(t) for key, t in finished.items() if key != "noisy")
    noisy_done = max(finished["noisy"])
    assert (quiet_done - first) < (noisy_done - first) / 2
