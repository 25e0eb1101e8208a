"""Enqueueing: what gets written, when it becomes visible, and what is refused."""

from __future__ import annotations

import dataclasses
import inspect
import time
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus

import pytest
from django.db import connection, transaction
from django.utils import timezone

from django_pgjobs import Job, PayloadError, UnknownQueue, UnknownTask, tasks
from django_pgjobs.enqueue import COPY_AT_LEAST, JobSpec
from django_pgjobs.exceptions import InvalidOption, InvalidQueueName
from django_pgjobs.models import Queue
from django_pgjobs.pipelines import enqueue_pipeline
from django_pgjobs.states import JobState
from testproject.demo.tasks import add, send_welcome
from tests.factories import QueueFactory

pytestmark = pytest.mark.django_db

#: A task that takes any arguments, for jobs whose arguments are what is tested.
ANYTHING = "tests.tasks_for_tests.takes_anything"


def test_task_enqueue_writes_an_available_job_with_the_task_defaults():
    job = send_welcome.enqueue(42)

    stored = Job.objects.get(pk=job.pk)
    assert stored.task == "testproject.demo.tasks.send_welcome"
    assert stored.args == [42]
    assert stored.queue == "mail"
    assert stored.max_attempts == 3
    assert stored.state == JobState.AVAILABLE


def test_job_enqueue_by_dotted_path_takes_every_documented_option():
    when = timezone.now() + timedelta(hours=1)
    job = Job.enqueue(
        "testproject.demo.tasks.add",
        args=[1],
        kwargs={"b": 2},
        queue="mail",
        priority=5,
        run_at=when,
        max_attempts=7,
        unique_key="add-1-2",
    )
    stored = Job.objects.get(pk=job.pk)
    assert (stored.queue, stored.priority, stored.max_attempts) == ("mail", 5, 7)
    assert stored.kwargs == {"b": 2}
    assert stored.run_at == when
    assert stored.state == JobState.SCHEDULED
    assert stored.unique_key == "add-1-2"


def test_job_enqueue_takes_the_options_of_a_job_spec_in_its_order():
    """Job.enqueue builds its JobSpec positionally: the same names in the same order."""
    parameters = list(inspect.signature(Job.enqueue).parameters)
    assert parameters == [field.name for field in dataclasses.fields(JobSpec)]


def test_using_overrides_options_for_one_call():
    job = add.using(priority=9, queue="mail").enqueue(1, 2)
    assert (job.priority, job.queue) == (9, "mail")


def test_max_attempts_falls_back_from_task_to_queue_settings_to_global(settings):
    settings.PGJOBS = {"QUEUES": {"default": {}, "picky": {"max_attempts": 4}}, "MAX_ATTEMPTS": 9}
    assert Job.enqueue("testproject.demo.tasks.add", [1, 2], queue="picky").max_attempts == 4
    assert Job.enqueue("testproject.demo.tasks.add", [1, 2]).max_attempts == 9
    assert Job.enqueue("testproject.demo.tasks.send_welcome", [1], queue="picky").max_attempts == 3


def test_what_options_decide_is_kept_between_calls_until_what_it_read_changes(settings):
    """A kind of job's checked options are kept from one enqueue to the next; a
    setting changed, a task registered again or gone, a queue row deleted: the next
    enqueue sees it."""
    name = "tests.test_enqueue.registered_twice"
    try:
        tasks.task(name=name)(add.func)
        first = Job.enqueue(name, [1, 1])
        assert (first.queue, first.max_attempts) == ("default", 20)
        settings.PGJOBS = {**settings.PGJOBS, "MAX_ATTEMPTS": 9}
        assert Job.enqueue(name, [1, 1]).max_attempts == 9
        later = Job.enqueue(name, [1, 1])
        assert later.created_at > first.created_at and later.run_at == later.created_at
        tasks.task(name=name, queue="mail", priority=3)(add.func)
        again = Job.enqueue(name, [1, 1])
        assert (again.queue, again.priority) == ("mail", 3)
    finally:
        tasks._registry.pop(name, None)
    with pytest.raises(UnknownTask):
        Job.enqueue(name, [1, 1])
    QueueFactory(name="short-lived")
    Job.enqueue("testproject.demo.tasks.add", [1, 1], queue="short-lived")
    Queue.objects.filter(name="short-lived").delete()
    with pytest.raises(UnknownQueue):
        Job.enqueue("testproject.demo.tasks.add", [1, 1], queue="gone")  # refreshes the names
    with pytest.raises(UnknownQueue):
        Job.enqueue("testproject.demo.tasks.add", [1, 1], queue="short-lived")


def test_an_unknown_queue_names_the_closest_one_that_exists():
    """A typo (queue="mial", runworker --queues mial) said only to declare the queue,
    though the one meant exists; a stored queue counts as a declared one."""
    QueueFactory(name="reports")
    with pytest.raises(UnknownQueue, match=r"unknown queue 'mial' \(did you mean 'mail'\?\): "):
        Job.enqueue("testproject.demo.tasks.add", [1, 1], queue="mial")
    with pytest.raises(UnknownQueue, match=r"\(did you mean 'reports'\?\)"):
        Job.enqueue("testproject.demo.tasks.add", [1, 1], queue="report")
    with pytest.raises(UnknownQueue) as far:
        Job.enqueue("testproject.demo.tasks.add", [1, 1], queue="zzzzzz")
    assert "did you mean" not in str(far.value)
    assert not Job.objects.exists()


def test_a_job_changed_after_enqueue_changes_no_later_job():
    """What a kind of job's options decide is kept between calls: a returned job's
    meta, nested dicts too, is its own."""
    first = Job.enqueue("testproject.demo.tasks.add", [1, 1], debounce_key="k", debounce=5)
    first.meta["debounce"]["seconds"] = 99
    first.meta["extra"] = True
    second = Job.enqueue("testproject.demo.tasks.add", [2, 2], debounce_key="k", debounce=5)
    assert second.meta == {"debounce": {"key": "k", "seconds": 5.0}}
    assert Job.objects.get(pk=second.pk).meta == second.meta


def test_a_run_at_kept_between_calls_is_still_compared_with_the_time_of_each():
    soon = timezone.now() + timedelta(milliseconds=50)
    assert Job.enqueue("testproject.demo.tasks.add", [1, 1], run_at=soon).state == "scheduled"
    deadline = time.monotonic() + 5
    while timezone.now() <= soon and time.monotonic() < deadline:
        time.sleep(0.01)
    assert Job.enqueue("testproject.demo.tasks.add", [1, 1], run_at=soon).state == "available"


def test_a_debounced_job_of_a_batch_refuses_depends_on_as_a_single_one_does():
    """Its options are those of the batch's job before it, but for depends_on."""
    first = Job.enqueue(ANYTHING, [1, 1])
    spec = {"task": ANYTHING, "debounce_key": "k", "debounce": 5}
    with pytest.raises(InvalidOption, match="depends_on"):
        Job.enqueue_many([spec, {**spec, "depends_on": [first]}])
    assert Job.objects.count() == 1


def test_enqueue_many_inserts_a_small_batch_with_one_statement(django_assert_num_queries):
    specs = [
        {"task": "testproject.demo.tasks.add", "args": [i, i]} for i in range(COPY_AT_LEAST - 1)
    ]
    with django_assert_num_queries(1):
        jobs = Job.enqueue_many(specs)
    assert [job.args for job in jobs] == [[i, i] for i in range(COPY_AT_LEAST - 1)]
    assert [job.pk for job in jobs] == sorted(Job.objects.values_list("pk", flat=True))


def test_one_job_is_one_insert_of_values_stored_as_a_batch_would_store_it(
    django_assert_num_queries,
):
    """Job.enqueue sends one statement (sql/insert_job.sql: no savepoint, no read),
    and the row is the one enqueue_many's JSON array writes for the same job."""
    later = timezone.now() + timedelta(hours=1)
    options = [
        {"args": ["\u00e9t\u00e9", [3], None], "kwargs": {"k": None, "n": 1.5}},
        {"run_at": later, "priority": -3, "timeout": 2.5, "meta": {"batch": "x"}},
        {"max_attempts": 2, "concurrency_key": "customer-7", "pass_results": True},
        {"args": [HTTPStatus.OK, "\U0001f600", 2**70, -0.0], "kwargs": {"s": "a\\u0000"}},
    ]
    for option in options:
        with django_assert_num_queries(1):
            one = Job.enqueue(ANYTHING, **option)
        pair = Job.enqueue_many([{"task": ANYTHING, **option}] * 2)
        columns = [f.attname for f in Job._meta.concrete_fields if f.attname != "id"]
        rows = Job.objects.filter(pk__in=[one.pk, pair[0].pk]).order_by("pk").values(*columns)
        now = {"created_at": None} | ({} if "run_at" in option else {"run_at": None})
        written, batched = [row | now for row in rows]
        assert written == batched
        assert Job.objects.get(pk=one.pk).args == one.args


def test_an_enqueue_run_while_an_enqueue_runs_gets_a_cursor_of_its_own():
    """Job.enqueue's insert runs on a cursor its connection keeps; an execute wrapper
    that enqueues between the insert and the read of its result must not take the
    outer job's id (nor its result) for its own."""
    inner: list[Job] = []

    def enqueue_after(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "pgjobs_insert_job" in sql and not inner:
            inner.append(None)  # type: ignore[arg-type]
            inner[0] = Job.enqueue("testproject.demo.tasks.add", [2, 2])
        return result

    Job.enqueue("testproject.demo.tasks.add", [0, 0])  # the connection keeps its cursor
    with connection.execute_wrapper(enqueue_after):
        outer = Job.enqueue("testproject.demo.tasks.add", [1, 1])
    assert outer.pk != inner[0].pk
    assert Job.objects.get(pk=outer.pk).args == [1, 1]
    assert Job.objects.get(pk=inner[0].pk).args == [2, 2]


@pytest.mark.django_db(transaction=True)
def test_enqueue_runs_on_a_new_connection_after_the_old_one_closed():
    first = Job.enqueue("testproject.demo.tasks.add", [1, 1])
    connection.close()
    second = Job.enqueue("testproject.demo.tasks.add", [2, 2])
    assert Job.objects.get(pk=second.pk).args == [2, 2] and second.pk > first.pk


def test_a_large_batch_is_copied_in_and_stored_as_a_small_one_would_be():
    """Batches of COPY_AT_LEAST jobs or more go through COPY: same rows, same ids."""
    later = timezone.now() + timedelta(hours=1)
    varied = [
        {"task": ANYTHING, "args": [1, "two", [3]], "kwargs": {"k": None}},
        {"task": ANYTHING, "run_at": later, "priority": -3, "timeout": 2.5},
        {"task": "testproject.demo.tasks.send_welcome", "args": [7], "meta": {"batch": "x"}},
        {"task": ANYTHING, "queue": "mail", "max_attempts": 2},
    ]
    small = Job.enqueue_many(varied)
    large = Job.enqueue_many(varied * (COPY_AT_LEAST // len(varied) + 1))
    assert [job.pk for job in large] == sorted(
        Job.objects.filter(pk__gt=small[-1].pk).values_list("pk", flat=True)
    )
    stored = {job.pk: job for job in Job.objects.all()}
    skip = {"id", "created_at", "run_at"}

    def fields(job):
        return {k: v for k, v in vars(job).items() if not k.startswith("_") and k not in skip}

    for i, job in enumerate(large):
        assert fields(stored[job.pk]) == fields(stored[small[i % len(varied)].pk])
        assert fields(job) == fields(stored[job.pk])  # what enqueue_many returned
    assert stored[large[1].pk].state == JobState.SCHEDULED
    assert stored[large[0].pk].result is None  # NULL, not JSON null
    assert Job.objects.filter(pk=large[0].pk, result__isnull=True).exists()


def test_a_large_batch_keeps_every_character_of_its_arguments():
    """Tabs, newlines, backslashes, quotes and non-ASCII text reach the table unchanged."""
    awkward = ["a\tb", "line\nbreak\r", "back\\slash", 'quote"', "é ü 日本 🎉", "\\N", ""]
    specs = [
        {
            "task": ANYTHING,
            "args": [awkward, i],
            "kwargs": {"k\t\\": awkward[i % len(awkward)]},
            "meta": {"note": awkward[i % len(awkward)]},
        }
        for i in range(COPY_AT_LEAST)
    ]
    jobs = Job.enqueue_many(specs)
    stored = {job.pk: job for job in Job.objects.filter(pk__in=[job.pk for job in jobs])}
    for spec, job in zip(specs, jobs, strict=True):
        assert stored[job.pk].args == spec["args"]
        assert stored[job.pk].kwargs == spec["kwargs"]
        assert stored[job.pk].meta == spec["meta"]


def test_jobs_of_one_batch_with_the_same_options_share_no_mutable_field():
    """A batch works out shared options once; every job still gets its own values."""
    jobs = Job.enqueue_many(
        [{"task": "testproject.demo.tasks.add", "args": [i, i]} for i in range(3)]
    )
    jobs[0].meta["mine"] = True
    jobs[0].errors.append("mine")
    assert [job.args for job in jobs] == [[0, 0], [1, 1], [2, 2]]
    assert [job.meta for job in jobs[1:]] == [{}, {}]
    assert [job.errors for job in jobs[1:]] == [[], []]


def test_a_unique_task_derives_each_job_s_key_from_its_own_arguments():
    jobs = Job.enqueue_many(
        [{"task": "tests.tasks_for_tests.unique_report", "args": [i]} for i in (1, 2, 1)]
    )
    assert jobs[0].unique_key != jobs[1].unique_key
    assert jobs[2].pk == jobs[0].pk  # the duplicate is the job already holding the key


def test_a_large_batch_of_a_unique_task_still_goes_in_one_by_one_and_deduplicates():
    """Keys decide per job; a batch with any is never copied in wholesale."""
    specs = [
        {"task": "tests.tasks_for_tests.unique_report", "args": [i % 10]}
        for i in range(COPY_AT_LEAST)
    ]
    jobs = Job.enqueue_many(specs)
    assert len({job.pk for job in jobs}) == 10
    assert Job.objects.count() == 10


def test_a_rolled_back_transaction_leaves_no_job():
    with pytest.raises(RuntimeError), transaction.atomic():
        add.enqueue(1, 2)
        raise RuntimeError("the view failed")
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "args, kwargs, named",
    [
        ([datetime(2026, 1, 1, tzinfo=UTC)], {}, "args[0]"),
        ([1], {"user": object()}, "kwargs['user']"),
        ([{"nested": [1, {2, 3}]}], {}, "args[0]['nested'][1]"),
        ([float("nan")], {}, "not a finite number"),
        ([{1: "int key"}], {}, "keys must be str"),
    ],
)
def test_arguments_that_are_not_json_raise_naming_the_value_and_write_nothing(args, kwargs, named):
    with pytest.raises(TypeError, match=named.replace("[", r"\[").replace("]", r"\]")):
        Job.enqueue("testproject.demo.tasks.add", args=args, kwargs=kwargs)
    assert not Job.objects.exists()


def test_a_date_argument_is_refused_saying_how_to_pass_one():
    # A date is the first non-JSON argument a new user passes: the error named it and
    # its type but not the two ways to pass one, its isoformat() or @task(typed=True).
    due = date(2026, 1, 31)
    calls = (
        lambda: add.enqueue(1, due),
        lambda: Job.enqueue("testproject.demo.tasks.add", kwargs={"a": 1, "b": due}),
        lambda: Job.enqueue_many([{"task": "testproject.demo.tasks.add", "args": [1, due]}]),
    )
    for call in calls:
        with pytest.raises(PayloadError) as refused:
            call()
        said = str(refused.value)
        assert "= datetime.date(2026, 1, 31) (type date); arguments are stored as JSON" in said
        assert "isoformat()" in said and "@task(typed=True)" in said
    with pytest.raises(PayloadError) as refused:  # not a type's fault: no such hint
        add.enqueue(1, float("nan"))
    assert "typed=True" not in str(refused.value)
    assert not Job.objects.exists()


def test_one_bad_job_in_a_batch_writes_none_of_the_batch():
    specs = [
        {"task": "testproject.demo.tasks.add", "args": [1, 2]},
        {"task": "testproject.demo.tasks.add", "args": [object()]},
    ]
    with pytest.raises(PayloadError):
        Job.enqueue_many(specs)
    assert not Job.objects.exists()


@pytest.mark.parametrize("bad", ["args", "task", "queue", "run_at"])
def test_a_bad_job_at_the_end_of_a_large_batch_writes_none_and_leaves_the_transaction_usable(bad):
    """A large batch is checked as it is copied in: the COPY is undone, not the caller's work."""
    wrong = {
        "args": {"args": [object()]},
        "task": {"task": "testproject.demo.tasks.nope"},
        "queue": {"queue": "bad queue!"},
        "run_at": {"run_at": datetime(2030, 1, 1)},  # naive
    }[bad]
    specs = [
        {"task": "testproject.demo.tasks.add", "args": [i, i]} for i in range(3 * COPY_AT_LEAST)
    ]
    specs[-1] = {**specs[-1], **wrong}
    with transaction.atomic():
        mine = add.enqueue(1, 1)
        with pytest.raises((PayloadError, UnknownTask, InvalidQueueName, ValueError)):
            Job.enqueue_many(specs)
        after = add.enqueue(2, 2)  # the transaction carries on
    assert list(Job.objects.values_list("pk", flat=True).order_by("pk")) == [mine.pk, after.pk]


def test_a_queue_and_connector_first_named_late_in_a_large_batch_are_looked_up_before_it():
    """Checking a queue or connector reads the database, which a streaming COPY forbids."""
    from tests.factories import ConnectorFactory

    late = QueueFactory(name="late").name
    hook = ConnectorFactory(name="late-hook").name
    plain = [{"task": ANYTHING, "args": [1, 2]}] * COPY_AT_LEAST
    jobs = Job.enqueue_many([*plain, {"task": ANYTHING, "queue": late, "connector": hook}])
    assert (jobs[-1].queue, jobs[-1].connector) == (late, hook)
    with pytest.raises(UnknownQueue):
        Job.enqueue_many([*plain, {"task": ANYTHING, "queue": "nowhere"}])
    assert Job.objects.count() == COPY_AT_LEAST + 1


@pytest.mark.django_db(transaction=True)
def test_a_bad_job_late_in_a_large_batch_outside_a_transaction_writes_none():
    """In autocommit the COPY is a transaction of its own: the error undoes all of it."""
    specs = [
        {"task": "testproject.demo.tasks.add", "args": [i, i]} for i in range(3 * COPY_AT_LEAST)
    ]
    specs[-1] = {**specs[-1], "args": [float("inf")]}
    with pytest.raises(PayloadError, match="not a finite number"):
        Job.enqueue_many(specs)
    assert not Job.objects.exists()
    assert len(Job.enqueue_many(specs[:-1])) == Job.objects.count() == 3 * COPY_AT_LEAST - 1


@pytest.mark.django_db(transaction=True)
def test_a_bad_job_late_in_a_large_batch_with_autocommit_off_leaves_the_transaction_usable():
    """autocommit off opens a transaction without atomic(): the COPY still gets a savepoint."""
    specs = [
        {"task": "testproject.demo.tasks.add", "args": [i, i]} for i in range(3 * COPY_AT_LEAST)
    ]
    specs[-1] = {**specs[-1], "queue": "bad queue!"}
    transaction.set_autocommit(False)
    try:
        mine = add.enqueue(1, 1)
        with pytest.raises(InvalidQueueName):
            Job.enqueue_many(specs)
        after = add.enqueue(2, 2)
        transaction.commit()
    finally:
        transaction.set_autocommit(True)
    assert list(Job.objects.values_list("pk", flat=True).order_by("pk")) == [mine.pk, after.pk]


@pytest.mark.parametrize("size", [1, COPY_AT_LEAST])
@pytest.mark.parametrize(
    "option, value, message",
    [
        ("priority", 1.5, "priority must be a whole number"),
        ("max_attempts", "3", "max_attempts must be a whole number"),
        ("timeout", "30", "timeout must be a number of seconds"),
        ("timeout", 0, "timeout must be a number of seconds above 0"),
    ],
)
def test_options_of_the_wrong_type_are_refused_naming_the_option(size, option, value, message):
    with pytest.raises(ValueError, match=message):
        Job.enqueue_many([{"task": "testproject.demo.tasks.add", option: value}] * size)
    assert not Job.objects.exists()


def test_arguments_of_subclasses_of_json_types_are_stored_as_their_json_values():
    """The quick check knows only JSON's own types; the full one still takes these."""
    from enum import IntEnum, StrEnum

    class Size(IntEnum):
        LARGE = 3

    class Colour(StrEnum):
        RED = "red"

    specs = [
        {"task": "testproject.demo.tasks.add", "args": [Size.LARGE, Colour.RED]}
    ] * COPY_AT_LEAST
    jobs = Job.enqueue_many(specs)
    assert Job.objects.get(pk=jobs[-1].pk).args == [3, "red"]


def test_a_large_batch_stores_naive_times_as_local_time_without_time_zone_support(settings):
    """USE_TZ = False: naive datetimes mean TIME_ZONE's local time, as the ORM stores them."""
    settings.USE_TZ, settings.TIME_ZONE = False, "Asia/Tokyo"
    jobs = Job.enqueue_many([{"task": ANYTHING}] * COPY_AT_LEAST)
    assert timezone.is_naive(jobs[0].created_at)
    stored = Job.objects.get(pk=jobs[0].pk)
    assert (stored.created_at, stored.run_at) == (jobs[0].created_at, jobs[0].run_at)


def test_oversized_payload_is_refused(settings):
    settings.PGJOBS = {"MAX_PAYLOAD_BYTES": 1000}
    with pytest.raises(PayloadError, match="over the limit of 1000"):
        add.enqueue("x" * 2000, 1)
    assert not Job.objects.exists()


def test_unknown_task_is_refused():
    with pytest.raises(UnknownTask, match="no_such_task"):
        Job.enqueue("testproject.demo.tasks.no_such_task")
    with pytest.raises(UnknownTask, match=r"os\.system"):
        Job.enqueue("os.system", args=["true"])  # importable, but not a @task
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "misspelt",
    [
        "testproject.demo.tasks.ad",  # a letter short
        "testproject.demo.task.add",  # the module misspelt
        "add",  # the function's name alone
        "demo.tasks.add",  # the app's path without its package
    ],
)
def test_a_misspelt_task_name_is_refused_naming_the_registered_one(misspelt):
    with pytest.raises(UnknownTask) as refused:
        Job.enqueue(misspelt, args=[1, 2])
    said = str(refused.value)
    assert "Did you mean " in said and "'testproject.demo.tasks.add'" in said.split("?")[0]
    assert "PGJOBS['TASK_MODULES']" in str(refused.value)  # the rest of the advice stays
    assert not Job.objects.exists()


def test_a_task_name_like_none_registered_suggests_nothing():
    with pytest.raises(UnknownTask) as refused:
        Job.enqueue("billing.jobs.charge_card")
    assert "Did you mean" not in str(refused.value)


def test_unknown_and_invalid_queues_are_refused():
    with pytest.raises(UnknownQueue, match="nowhere"):
        add.using(queue="nowhere").enqueue(1, 2)
    with pytest.raises(InvalidQueueName):
        add.using(queue="has spaces").enqueue(1, 2)
    assert not Job.objects.exists()


def test_a_queue_created_in_the_table_is_usable_at_once():
    with pytest.raises(UnknownQueue):
        add.using(queue="reports").enqueue(1, 2)
    QueueFactory(name="reports")
    assert add.using(queue="reports").enqueue(1, 2).queue == "reports"


def test_naive_run_at_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        add.using(run_at=datetime(2030, 1, 1)).enqueue(1, 2)


def test_duplicate_unique_key_returns_the_existing_active_job():
    first = add.using(unique_key="report:7").enqueue(1, 2)
    second = add.using(unique_key="report:7").enqueue(1, 2)
    assert second.pk == first.pk
    assert second.is_duplicate and not first.is_duplicate
    assert Job.objects.count() == 1


def test_enqueue_sends_job_enqueued():
    from django_pgjobs.signals import job_enqueued

    seen = []

    def receiver(sender, job, **kwargs):
        seen.append(job.pk)

    job_enqueued.connect(receiver)
    try:
        job = add.enqueue(1, 2)
    finally:
        job_enqueued.disconnect(receiver)
    assert seen == [job.pk]


def test_calling_a_task_runs_it_here_and_now():
    assert add(2, 3) == 5
    assert not Job.objects.exists()


@pytest.mark.parametrize("enabled", [True, False])
def test_a_large_batch_leaves_the_cycle_collector_as_it_found_it(enabled):
    """enqueue_many pauses the collector while it builds a large batch, and only then."""
    import gc

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        Job.enqueue_many([{"task": "testproject.demo.tasks.add", "args": [1, 2]}] * COPY_AT_LEAST)
        with pytest.raises(PayloadError):  # and when the batch is refused
            Job.enqueue_many([{"task": "testproject.demo.tasks.add", "args": [object()]}] * 200)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert Job.objects.count() == COPY_AT_LEAST


def test_options_new_on_every_call_are_checked_afresh_not_kept():
    # A run_at or a key made per call would fill the kept kinds of job and clear them
    # of the few a process enqueues all day (enqueue._PROTOTYPES, at most 1,000).
    from django_pgjobs import enqueue

    name = "testproject.demo.tasks.add"
    Job.enqueue(name, args=[1, 2])
    kept = dict(enqueue._PROTOTYPES)
    for n in range(20):
        Job.enqueue(name, args=[n, n], unique_key=f"user-{n}")
        Job.enqueue(name, args=[n, n], run_at=timezone.now() + timedelta(seconds=n))
        Job.enqueue(name, args=[n, n], concurrency_key=f"tenant-{n}")
    assert dict(enqueue._PROTOTYPES) == kept  # nothing added, nothing cleared
    assert Job.objects.count() == 61


def _future_django(connection, prepare_cursor):
    """The connection's class as a future Django might have it: its cursors wrapped by
    ``_wrap_cursor``, and ``_prepare_cursor`` gone or taking other arguments."""
    wrap = type(connection)._prepare_cursor

    class FutureDjango(type(connection)):
        _wrap_cursor = wrap

        def _cursor(self, name=None):
            self.close_if_health_check_failed()
            self.ensure_connection()
            with self.wrap_database_errors:
                return self._wrap_cursor(self.create_cursor(name))

    def gone(self):
        raise AttributeError("_prepare_cursor")

    FutureDjango._prepare_cursor = property(gone) if prepare_cursor is None else prepare_cursor
    return FutureDjango


@pytest.mark.parametrize(
    "prepare_cursor",
    [None, lambda self, cursor, logged: cursor],
    ids=["gone", "other arguments"],
)
def test_enqueue_works_in_the_callers_transaction_on_a_django_without_prepare_cursor(
    monkeypatch, prepare_cursor
):
    """The kept cursor of Job.enqueue's insert is wrapped by Django's private
    ``_prepare_cursor``: without it (or with another signature) enqueue takes the
    ordinary ``connection.cursor()``, in the caller's transaction all the same."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    from django_pgjobs import db

    wrapper = connections[db.alias()]  # the connection itself, not django.db's proxy
    wrapper.ensure_connection()
    monkeypatch.setattr(wrapper, "__class__", _future_django(wrapper, prepare_cursor))
    monkeypatch.delitem(wrapper.__dict__, db._KEPT, raising=False)
    assert db._cursor_wrapper(wrapper) is None
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            job = add.enqueue(2, 3)
        assert [query["sql"] for query in queries if "pgjobs_insert_job" in query["sql"]]
        assert Job.objects.get(pk=job.pk).args == [2, 3]  # seen within the transaction
        assert db._KEPT not in wrapper.__dict__  # the fallback ran it
        transaction.set_rollback(True)
    assert not Job.objects.filter(pk=job.pk).exists()  # gone with the caller's rollback
    assert connection.in_atomic_block  # pytest-django's transaction, still usable
    assert Job.objects.count() == 0


def test_none_means_no_args_and_no_kwargs_at_every_entry_point():
    """As ``Job.enqueue(kwargs=None)`` did, and as None means "not given" for every
    other key of enqueue_many's dicts (queue, priority, run_at, meta, ...) and
    ``null`` for every field of ``POST /jobs``: ``args=None`` (and a dict's or a
    JobSpec's ``"args": None`` or ``"kwargs": None``) was a PayloadError ("args must
    be a list, not NoneType")."""
    alone = Job.enqueue(ANYTHING, None, None, meta=None)
    named = Job.enqueue(ANYTHING, args=None, kwargs={"a": 1})
    small = Job.enqueue_many([{"task": ANYTHING, "args": None, "kwargs": None, "meta": None}])
    spec = JobSpec(ANYTHING, None, None)  # type: ignore[arg-type]
    large = Job.enqueue_many([spec] * COPY_AT_LEAST)
    assert (spec.args, spec.kwargs) == (None, None)  # the caller's spec is left as it was
    for job in [alone, named, *small, large[0], large[-1]]:
        stored = Job.objects.get(pk=job.pk)
        assert job.args == [] == stored.args
        assert job.kwargs == ({"a": 1} if job is named else {}) == stored.kwargs
    from tests import tasks_for_typed

    typed = Job.enqueue_many([{"task": tasks_for_typed.counted.name, "args": [1], "kwargs": None}])
    assert typed[0].kwargs == {}


@pytest.mark.parametrize("field", ["args", "kwargs"])
@pytest.mark.parametrize("value", [[], {}, "", 0, False], ids=repr)
def test_args_and_kwargs_of_the_wrong_type_are_refused_even_when_empty(field, value):
    """Only None means none: ``kwargs or {}`` took ``kwargs=[]``, ``""``, 0 and False
    for no kwargs at ``Job.enqueue`` while enqueue_many refused them."""
    if (field, type(value)) in {("args", list), ("kwargs", dict)}:
        pytest.skip("the right type")
    kind = "a list" if field == "args" else "a dict"
    with transaction.atomic():
        for call in (
            lambda: Job.enqueue(ANYTHING, **{field: value}),
            lambda: Job.enqueue_many([{"task": ANYTHING, field: value}]),
        ):
            with pytest.raises(PayloadError, match=f"^{field} must be {kind}, not "):
                call()
        assert Job.objects.count() == 0  # nothing written, the transaction still usable


@pytest.mark.parametrize("value", [[], "", 0, False, [("a", 1)]], ids=repr)
def test_meta_of_the_wrong_type_is_refused_even_when_empty(value):
    """Only None means no meta, as for kwargs: ``meta or {}`` took ``meta=[]``, ``""``,
    0 and False for none at Job.enqueue and enqueue_pipeline, and enqueue_many left a
    falsy meta unchecked; a pipeline's ``{**meta}`` raised TypeError for a list."""
    with transaction.atomic():
        for call in (
            lambda: Job.enqueue(ANYTHING, meta=value),
            lambda: Job.enqueue_many([{"task": ANYTHING, "meta": value}]),
            lambda: Job.enqueue_many([JobSpec(ANYTHING, meta=value)] * COPY_AT_LEAST),
            lambda: enqueue_pipeline(JobSpec(ANYTHING, meta=value)),
        ):
            with pytest.raises(PayloadError, match=r"^meta must be a dict, not "):
                call()
        assert Job.objects.count() == 0  # nothing written, the transaction still usable


def test_meta_none_is_no_meta_at_every_entry_point():
    spec = JobSpec(ANYTHING, meta=None)  # type: ignore[arg-type]
    jobs = [
        Job.enqueue(ANYTHING, meta=None),
        *Job.enqueue_many([{"task": ANYTHING, "meta": None}, spec]),
        *Job.enqueue_many([spec] * COPY_AT_LEAST)[:1],
        *enqueue_pipeline(spec)[0],
    ]
    assert spec.meta is None  # the caller's spec is left as it was
    assert [Job.objects.get(pk=job.pk).meta for job in jobs][:4] == [{}] * 4
    assert set(Job.objects.get(pk=jobs[-1].pk).meta) == {"pipeline"}


@pytest.mark.parametrize("option", ["unique", "isolated", "typed"])
@pytest.mark.parametrize("value, shown", [(1, "1"), ("no", "'no'"), (None, "None")])
def test_a_tasks_flags_are_true_or_false_as_pass_results_is(option, value, shown):
    """Taken for their truth, unique="no" made a unique task (and 1 one too): refused
    as enqueue's pass_results and every other flag are, naming the option."""
    name = "tests.test_enqueue.flagged"
    with pytest.raises(InvalidOption, match=f"^{option} must be True or False, not {shown}$"):
        tasks.task(name=name, **{option: value})(add.func)
    assert name not in tasks._registry
