"""Jobs that depend on jobs: waiting, release, failure, fan-out/fan-in, stages."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from django_pgjobs import InvalidOption, Job, transitions
from django_pgjobs.dependencies import UnknownDependency, initial_state
from django_pgjobs.models import JobDependency
from django_pgjobs.pipelines import enqueue_pipeline
from django_pgjobs.states import JobState
from testproject.demo.tasks import add, split, square, total
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

S = JobState


def state(job: Job) -> str:
    return Job.objects.get(pk=job.pk).state


def test_a_job_waits_until_all_its_dependencies_complete(worker):
    first, second = add.enqueue(1, 1), add.enqueue(2, 2)
    joined = Job.enqueue("testproject.demo.tasks.add", [3, 3], depends_on=[first, second.pk])
    assert joined.state == S.WAITING and joined.pending_dependencies == 2

    assert worker.drain(max_jobs=1) == {"completed": 1}  # only one dependency ran
    assert state(joined) == S.WAITING
    worker.drain()
    assert state(joined) == S.COMPLETED


def test_dependencies_already_completed_count_as_done():
    done = JobFactory(completed=True)
    job = Job.enqueue("testproject.demo.tasks.add", [1, 1], depends_on=[done])
    assert job.state == S.AVAILABLE and job.pending_dependencies == 0


def test_a_failed_dependency_cancels_its_dependents_down_the_chain(worker):
    doomed = Job.enqueue("testproject.demo.tasks.always_fails", max_attempts=1)
    child = Job.enqueue("testproject.demo.tasks.add", [1, 1], depends_on=[doomed])
    grandchild = Job.enqueue("testproject.demo.tasks.add", [1, 1], depends_on=[child])
    worker.drain()
    assert state(doomed) == S.DISCARDED
    for job in (child, grandchild):
        job.refresh_from_db()
        assert job.state == S.CANCELLED
        assert job.errors[-1]["error"].startswith("DependencyFailed")


def test_a_failed_job_cancels_a_chain_of_a_thousand_dependents():
    """Each level of the cancellation fired the job table's trigger one level deeper:
    from about 700 stages the server ran out of stack ("stack depth limit exceeded"),
    and the first job's failure could never be recorded. Now a loop goes down the
    chain, every level checked and published as before.

    A session that had cancelled a short chain before then planned each level's read
    of the dependents as every waiting job against every other: over 120 s (migration
    0025). So a few are cancelled first, as a worker's connection will have: past five
    turns of the loop, PL/pgSQL may keep a generic plan of it."""
    for _ in range(3):
        enqueue_pipeline(*[add.spec(1, n) for n in range(5)])[0][0].cancel()
    stages = enqueue_pipeline(*[add.spec(1, n) for n in range(1000)])
    first, last = stages[0][0], stages[-1][0]
    first.cancel()
    assert Job.objects.filter(state=S.CANCELLED).count() == 1000 + 3 * 5
    last.refresh_from_db()
    assert last.errors[-1]["error"] == f"DependencyFailed: job {stages[-2][0].pk} ended cancelled"


def _job_rows_read() -> int:
    """Rows of the job table this transaction has read, by scans and index fetches."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
            " FROM pg_stat_xact_user_tables WHERE relname = 'pgjobs_job'"
        )
        return cursor.fetchone()[0]


def test_releasing_a_dependent_reads_it_not_every_waiting_job_against_every_other(worker):
    """Each completion that released a dependent read every waiting job once for each
    waiting job: 10 completions beside 900 waiting jobs read 4 million rows, where a
    worker completing such jobs took 0.4 s for each (migration 0025)."""
    for _ in range(100):
        enqueue_pipeline(*[add.spec(1, n) for n in range(10)])
    before = _job_rows_read()
    assert worker.drain(max_jobs=10)[S.COMPLETED] == 10
    # Now about 3,000 (a seq scan of this small, never analyzed table per level, where
    # a large one is read by id); the quadratic reading is over 1,000 times that.
    assert _job_rows_read() - before < 100_000


def test_run_anyway_dependents_run_after_a_failed_dependency(worker):
    doomed = JobFactory(retryable=True, max_attempts=1)
    cleanup = Job.enqueue(
        "testproject.demo.tasks.add", [1, 1], depends_on=[doomed], on_dependency_failure="run"
    )
    doomed.cancel()
    assert state(cleanup) == S.AVAILABLE


def test_a_dependency_that_completes_twice_releases_once(worker):
    first, second = add.enqueue(1, 1), add.using(queue="mail").enqueue(2, 2)
    joined = Job.enqueue("testproject.demo.tasks.add", [3, 3], depends_on=[first, second])
    only_default = type(worker)(["default"])
    only_default.drain()
    Job.objects.get(pk=first.pk).retry()  # an operator re-runs the finished dependency
    only_default.drain()
    assert state(first) == S.COMPLETED and state(second) == S.AVAILABLE
    joined.refresh_from_db()
    assert joined.state == S.WAITING and joined.pending_dependencies == 1


def test_unknown_dependencies_are_refused_and_nothing_is_written():
    with pytest.raises(UnknownDependency, match="999999"):
        Job.enqueue("testproject.demo.tasks.add", [1, 1], depends_on=[999999])
    assert not Job.objects.exists()


def test_an_already_failed_dependency_cancels_the_new_job_at_once():
    failed = JobFactory(discarded=True)
    job = Job.enqueue("testproject.demo.tasks.add", [1, 1], depends_on=[failed])
    assert job.state == S.CANCELLED


class CountedId(int):
    """A job id that counts how often it is compared with another."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        CountedId.comparisons += 1
        return int(self) == other

    __hash__ = int.__hash__


def test_a_new_job_s_state_compares_no_dependency_with_every_other():
    """A job that runs anyway after failed dependencies searched the list of failed
    ones for each of them: 64,000 failed dependencies took 21 s to enqueue (8,000:
    0.5 s). Now its dependencies are read once each, whatever their number."""
    count = 2_000
    states = {CountedId(i): "discarded" if i % 2 else "executing" for i in range(1, count + 1)}
    job = Job(task="testproject.demo.tasks.add", meta={"on_dependency_failure": "run"})
    CountedId.comparisons = 0

    initial_state(job, states, timezone.now())

    assert job.state == S.WAITING and job.pending_dependencies == count // 2
    assert CountedId.comparisons < count  # 2,999,000 before


def test_stages_run_in_order_and_the_gather_job_gets_every_result(worker):
    fan_out, gather, last = enqueue_pipeline(
        [square.spec(n) for n in range(5)],
        total.using(pass_results=True).spec(),
        add.spec(0, 0),
        name="nightly",
    )
    assert all(job.meta["pipeline"] == "nightly" for stage in (fan_out, gather) for job in stage)
    assert {job.state for job in gather + last} == {S.WAITING}
    assert JobDependency.objects.filter(job=gather[0]).count() == 5
    worker.drain()
    assert Job.objects.get(pk=gather[0].pk).result == sum(n * n for n in range(5))
    assert state(last[0]) == S.COMPLETED


def test_a_running_job_can_add_jobs_its_dependents_then_wait_for(worker):
    _splitter, gather = enqueue_pipeline(
        split.spec(4), total.using(pass_results=True).spec(), name="split"
    )
    worker.drain(max_jobs=1)  # runs the splitter, which adds 4 squares
    assert state(gather[0]) == S.WAITING
    assert Job.objects.filter(task__endswith=".square", meta__pipeline="split").count() == 4
    worker.drain()
    # The gather job sees the splitter's result and the four squares, in id order.
    assert Job.objects.get(pk=gather[0].pk).result == 4 + 0 + 1 + 4 + 9


def test_pass_results_to_a_task_that_takes_no_results_is_refused_at_enqueue():
    # It was accepted, and each attempt then failed with ArgumentMismatch ("fetch() has
    # no parameter 'results'... this worker's code may be older"): retried for nothing.
    first = add.enqueue(1, 1)
    with transaction.atomic():
        for call in (
            lambda: Job.enqueue("testproject.demo.tasks.add", [1, 1], pass_results=True),
            lambda: add.using(pass_results=True).enqueue(1, 1),
            lambda: enqueue_pipeline([square.spec(2)], add.using(pass_results=True).spec(1, 1)),
        ):
            with pytest.raises(InvalidOption) as refused:
                call()
            assert refused.value.field == "pass_results"
            assert str(refused.value) == (
                "pass_results calls the task with results=[...] (its dependencies' results), "
                "and testproject.demo.tasks.add has no parameter 'results' (nor **kwargs)"
            )
        assert list(Job.objects.values_list("pk", flat=True)) == [first.pk]  # still usable
    gather = Job.enqueue("testproject.demo.tasks.total", depends_on=[first], pass_results=True)
    assert gather.state == S.WAITING


def test_an_empty_pipeline_or_stage_is_refused():
    with pytest.raises(ValueError):
        enqueue_pipeline()
    with pytest.raises(ValueError):
        enqueue_pipeline([add.spec(1, 1)], [])
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "name, said",
    [
        # Stored as given: meta["pipeline"] == 5, a list, or 10,000 characters.
        (5, "name must be a string, not int 5"),
        (["nightly"], "name must be a string, not list ['nightly']"),
        (b"nightly", "name must be a string, not bytes b'nightly'"),
        ("n" * 256, "name must be 1 to 255 characters, not 256"),
        ("night\x00ly", "name "),  # no jsonb text holds a NUL
        # A random id, silently: most likely a caller's bug (a setting left empty), and
        # its jobs could no longer be found together by the name it meant.
        ("", "name must not be empty: leave it out (or None) for a random id"),
    ],
)
def test_a_pipeline_name_is_text_as_other_names_are(name, said):
    first = Job.enqueue("testproject.demo.tasks.add", [1, 1])
    with transaction.atomic():
        with pytest.raises(InvalidOption, match=re.escape(said)):
            enqueue_pipeline([add.spec(1, 1)], name=name)
        assert list(Job.objects.values_list("pk", flat=True)) == [first.pk]  # still usable


def test_a_pipeline_named_or_not_and_its_specs_meta_none():
    (named,), (other,) = enqueue_pipeline(add.spec(1, 1), add.spec(2, 2), name="n" * 255)
    assert named.meta["pipeline"] == other.meta["pipeline"] == "n" * 255
    (unnamed,) = enqueue_pipeline({"task": add.name, "args": [1, 1], "meta": None})[0]
    assert len(unnamed.meta["pipeline"]) == 12  # a random id, as with name=None
    assert len(enqueue_pipeline(add.spec(1, 1), name=None)[0][0].meta["pipeline"]) == 12


def test_a_specs_own_pipeline_in_meta_is_refused_not_replaced():
    """It was replaced by the pipeline's name, silently: jobs enqueued with
    meta={"pipeline": "billing"} were found under no such label."""
    first = Job.enqueue("testproject.demo.tasks.add", [1, 1])
    with transaction.atomic():
        for name, said in (
            ("nightly", "'nightly'"),
            (None, "a random id"),
        ):
            with pytest.raises(InvalidOption) as refused:
                enqueue_pipeline(
                    [add.spec(1, 1)], add.using(meta={"pipeline": "billing"}).spec(2, 2),
                    name=name,
                )  # fmt: skip
            assert refused.value.field == "meta"
            assert str(refused.value) == (
                f"meta key 'pipeline' ('billing') would be replaced by the pipeline's name "
                f"({said}): pass name= instead, or leave the key out"
            )
        assert list(Job.objects.values_list("pk", flat=True)) == [first.pk]  # still usable
    # The same name is no replacement: kept.
    ((job,),) = enqueue_pipeline(add.using(meta={"pipeline": "n", "x": 1}).spec(1, 1), name="n")
    assert job.meta == {"pipeline": "n", "x": 1}


def test_add_jobs_refuses_a_specs_own_pipeline_in_meta():
    from django_pgjobs.context import JobContext, _current
    from django_pgjobs.pipelines import add_to_running_pipeline

    ((parent,),) = enqueue_pipeline(add.spec(1, 1), name="nightly")
    token = _current.set(JobContext(job=parent))
    try:
        with pytest.raises(InvalidOption) as refused:
            add_to_running_pipeline([add.using(meta={"pipeline": "billing"}).spec(2, 2)])
        assert str(refused.value) == (
            "meta key 'pipeline' ('billing') would be replaced by the running job's "
            "pipeline ('nightly'): leave the key out"
        )
        (kept,) = add_to_running_pipeline([add.using(meta={"pipeline": "nightly"}).spec(3, 3)])
    finally:
        _current.reset(token)
    assert kept.meta == {"pipeline": "nightly"}
    assert Job.objects.count() == 2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_three_stages_with_fifty_way_fan_out_over_two_worker_processes(worker_process, wait):
    (start,), fan_out, (gather,) = enqueue_pipeline(
        add.spec(0, 0),
        [square.spec(n) for n in range(50)],
        total.using(pass_results=True).spec(),
    )
    workers = [worker_process("--concurrency", "4") for _ in range(2)]
    wait(lambda: state(gather) in {S.COMPLETED, S.DISCARDED}, timeout=60)
    gather.refresh_from_db()
    assert gather.state == S.COMPLETED
    assert gather.result == sum(n * n for n in range(50))
    finished = Job.objects.filter(pk__in=[j.pk for j in fan_out]).values_list(
        "finished_at", flat=True
    )
    # attempted_at is the claiming worker's clock read just before its claim
    # statement, which may precede the commit that released the job by a little.
    slack = timedelta(seconds=1)
    assert max(finished) <= gather.attempted_at + slack
    assert min(j.attempted_at for j in Job.objects.filter(pk__in=[j.pk for j in fan_out])) >= (
        Job.objects.get(pk=start.pk).finished_at - slack
    )
    for process in workers:
        assert process.stop() == 0


@pytest.mark.django_db(transaction=True)
def test_two_last_dependencies_finishing_at_once_release_the_dependent_exactly_once():
    first = JobFactory(executing=True)
    second = JobFactory(executing=True)
    joined = Job.enqueue("testproject.demo.tasks.add", [1, 1], depends_on=[first, second])
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def finish(job: Job) -> None:
        try:
            with transaction.atomic():
                barrier.wait(5)
                transitions.complete(Job.objects.get(pk=job.pk), result=None)
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=finish, args=(job,)) for job in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors
    joined.refresh_from_db()
    assert joined.state == S.AVAILABLE and joined.pending_dependencies == 0
    assert JobDependency.objects.filter(job=joined, satisfied=True).count() == 2


@pytest.mark.parametrize("meta", [5, "nightly", [], None, {"pipeline": 7}, {"pipeline": ""}])
def test_add_jobs_of_a_job_whose_meta_sql_wrote_oddly_adds_them_without_a_pipeline(meta):
    """A running job whose meta is no object, or whose pipeline is no name (written by
    SQL), raised AttributeError from add_jobs ('int' object has no attribute 'get')."""
    from django_pgjobs.context import JobContext, _current
    from django_pgjobs.pipelines import add_to_running_pipeline

    parent = Job.enqueue(add.name, [1, 1])
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pgjobs_job SET meta = %s::jsonb WHERE id = %s",
            [json.dumps(meta), parent.pk],
        )
    parent.refresh_from_db()
    token = _current.set(JobContext(job=parent))
    try:
        (added,) = add_to_running_pipeline([add.spec(2, 2)])
    finally:
        _current.reset(token)
    assert "pipeline" not in Job.objects.get(pk=added.pk).meta
    assert JobDependency.objects.filter(job=added).count() == 0
