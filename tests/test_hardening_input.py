"""Hostile input at the Python API (issue 16): refused with the documented exception,
nothing written, the caller's transaction usable; and what is taken, a worker runs.

Every entry point gets the same values: ``Job.enqueue``, ``task.enqueue``,
``task.using(...).enqueue``, and ``Job.enqueue_many`` both ways (one INSERT for a
small batch, the binary COPY for a large one, where the bad job comes last).
"""

# ruff: noqa: E501 - the tables of cases keep one case a line

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone as django_timezone
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from django_pgjobs import Job, PayloadError
from django_pgjobs.enqueue import COPY_AT_LEAST
from django_pgjobs.exceptions import InvalidOption, InvalidQueueName, UnknownConnector
from django_pgjobs.limits import EARLIEST, END, LATEST_NOW, MAX_ATTEMPTS, MAX_SECONDS
from django_pgjobs.payload import MAX_DEPTH
from django_pgjobs.worker import Worker
from tests.tasks_for_tests import _cyclic, _deep, takes_anything

pytestmark = pytest.mark.django_db

ANYTHING = "tests.tasks_for_tests.takes_anything"


def offset(hours: float) -> timezone:
    return timezone(timedelta(hours=hours))


class BrokenOffset(tzinfo):
    """A tzinfo whose offset Python itself refuses (a day and more)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=30)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


class RaisingOffset(tzinfo):
    """A tzinfo of the caller's whose utcoffset() raises ``error`` (a bug of its own)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise self.error

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


class WrongOffset(tzinfo):
    """A tzinfo whose utcoffset() is no timedelta: Python raises TypeError of it."""

    def utcoffset(self, dt: datetime | None) -> Any:
        return 3600

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


class OwnError(Exception):
    pass


#: A time whose tzinfo can't say its offset, but by ValueError or OverflowError.
UNSAYABLE_TIMES = {
    "TypeError": datetime(2030, 1, 1, tzinfo=RaisingOffset(TypeError("no offset here"))),
    "an exception of its own": datetime(2030, 1, 1, tzinfo=RaisingOffset(OwnError("lost"))),
    "no timedelta": datetime(2030, 1, 1, tzinfo=WrongOffset()),
}


def cyclic_dict() -> dict:
    value: dict = {}
    value["me"] = value
    return value


#: name -> (options of the job, the exception, a part of its message)
REFUSED: dict[str, tuple[dict[str, Any], type[Exception], str]] = {
    # Times outside years 1-9999 once in UTC, or that no local time zone can show
    "run_at BC once in UTC": ({"run_at": datetime(1, 1, 1, tzinfo=offset(14))}, InvalidOption, "run_at .* out of range"),
    "run_at on the first day": ({"run_at": datetime(1, 1, 1, 12, tzinfo=UTC)}, InvalidOption, "out of range"),
    "run_at past 9999 in UTC": ({"run_at": datetime(9999, 12, 31, 23, tzinfo=offset(-14))}, InvalidOption, "out of range"),
    "run_at on the last day": ({"run_at": datetime(9999, 12, 31, tzinfo=UTC)}, InvalidOption, "out of range"),
    "run_at naive": ({"run_at": datetime(2030, 1, 1)}, InvalidOption, "timezone-aware"),
    "run_at a date": ({"run_at": date(2030, 1, 1)}, InvalidOption, "not date"),
    "run_at a string": ({"run_at": "2030-01-01T00:00:00Z"}, InvalidOption, "not str"),
    "run_at with an offset Python refuses": ({"run_at": datetime(2030, 1, 1, tzinfo=BrokenOffset())}, InvalidOption, "out of range"),
    # It reached the caller as the tzinfo's own TypeError, or any exception of its own.
    **{f"run_at whose tzinfo raises {name}": ({"run_at": when}, InvalidOption, "run_at .*: its time zone can't say its offset from UTC") for name, when in UNSAYABLE_TIMES.items()},
    # Numbers that are not finite, or beyond their column or any sense
    "timeout NaN": ({"timeout": math.nan}, InvalidOption, "timeout must be a number of seconds"),
    "timeout infinite": ({"timeout": math.inf}, InvalidOption, "timeout"),
    "timeout negative infinite": ({"timeout": -math.inf}, InvalidOption, "timeout"),
    "timeout absurd": ({"timeout": 1e300}, InvalidOption, "at most 31536000"),
    "timeout an int too large for a float": ({"timeout": 10**400}, InvalidOption, "timeout"),
    "timeout a bool": ({"timeout": True}, InvalidOption, "timeout"),
    "timeout zero": ({"timeout": 0}, InvalidOption, "above 0"),
    "priority beyond smallint": ({"priority": 2**15}, InvalidOption, "priority must be between -32768 and 32767"),
    "priority below smallint": ({"priority": -(2**15) - 1}, InvalidOption, "priority"),
    "priority of 100 digits": ({"priority": 10**100}, InvalidOption, "priority"),
    "priority too long to print": ({"priority": 10**5000}, InvalidOption, "too large to show"),
    "priority a float": ({"priority": 1.0}, InvalidOption, "priority must be a whole number"),
    "priority NaN": ({"priority": math.nan}, InvalidOption, "priority"),
    "priority a bool": ({"priority": True}, InvalidOption, "priority"),
    "max_attempts zero": ({"max_attempts": 0}, InvalidOption, "max_attempts must be between 1"),
    "max_attempts beyond integer": ({"max_attempts": 2**31}, InvalidOption, "max_attempts"),
    "max_attempts absurd": ({"max_attempts": MAX_ATTEMPTS + 1}, InvalidOption, "max_attempts"),
    "max_attempts NaN": ({"max_attempts": math.nan}, InvalidOption, "max_attempts"),
    # Text PostgreSQL refuses (NUL, lone surrogates), in any string or key
    "args with NUL": ({"args": ["a\x00b"]}, PayloadError, r"args\[0\] contains a NUL"),
    "args with a lone surrogate": ({"args": ["\ud800"]}, PayloadError, r"args\[0\] contains a lone surrogate"),
    "args with a lone low surrogate": ({"args": [["x", "\udfff"]]}, PayloadError, r"args\[0\]\[1\]"),
    "args with a surrogate pair as code points": ({"args": ["\ud83d\ude00"]}, PayloadError, "surrogate"),
    "kwargs with NUL in a key": ({"kwargs": {"a\x00": 1}}, PayloadError, "kwargs has a key that contains a NUL"),
    "kwargs with a surrogate in a nested key": ({"kwargs": {"a": {"\udc00": 1}}}, PayloadError, r"kwargs\['a'\] has a key"),
    "kwargs with NUL in a nested value": ({"kwargs": {"a": [{"b": "\x00"}]}}, PayloadError, r"kwargs\['a'\]\[0\]\['b'\]"),
    "unique_key with NUL": ({"unique_key": "k\x00"}, InvalidOption, "unique_key contains a NUL"),
    "unique_key with a lone surrogate": ({"unique_key": "\udc00"}, InvalidOption, "unique_key contains a lone surrogate"),
    "unique_key too long": ({"unique_key": "k" * 256}, InvalidOption, "unique_key must be 1 to 255"),
    "unique_key not a string": ({"unique_key": 7}, InvalidOption, "unique_key must be a string"),
    "meta with NUL": ({"meta": {"note": "\x00"}}, PayloadError, r"meta\['note'\] contains a NUL"),
    "meta not a dict": ({"meta": ["a"]}, PayloadError, "meta must be a dict"),
    "queue with NUL": ({"queue": "default\x00"}, InvalidQueueName, "invalid queue name"),
    "queue unhashable": ({"queue": ["default"]}, InvalidQueueName, "invalid queue name"),
    "connector with NUL": ({"connector": "hook\x00"}, UnknownConnector, "unknown connector"),
    # Values that are no name, yet false: taken as "not given" (the default queue, no
    # connector, no key), as 7 was refused (0 as max_attempts is refused too)
    "queue zero": ({"queue": 0}, InvalidQueueName, "invalid queue name 0"),
    "queue False": ({"queue": False}, InvalidQueueName, "invalid queue name False"),
    "queue an empty list": ({"queue": []}, InvalidQueueName, "invalid queue name"),
    "connector zero": ({"connector": 0}, UnknownConnector, "unknown connector 0"),
    "connector an empty dict": ({"connector": {}}, UnknownConnector, "unknown connector"),
    "unique_key zero": ({"unique_key": 0}, InvalidOption, "unique_key must be a string"),
    "unique_key False": ({"unique_key": False}, InvalidOption, "unique_key must be a string"),
    # Structures no reader can parse back, or that never end
    "args nested too deep": ({"args": _deep(MAX_DEPTH + 1)}, PayloadError, f"nested more than {MAX_DEPTH} levels"),
    "kwargs nested too deep": ({"kwargs": {"a": _deep(MAX_DEPTH)}}, PayloadError, "nested more than"),
    "args that contain themselves": ({"args": _cyclic()}, PayloadError, r"args\[1\].* contains itself"),
    "kwargs that contain themselves": ({"kwargs": cyclic_dict()}, PayloadError, r"kwargs\['me'\].* contains itself"),
    "args deeper than the stack": ({"args": _deep(10_000)}, PayloadError, "nested more than"),
    "an integer Python can't print": ({"args": [10**5000]}, PayloadError, "more than 4300 digits"),
    "a non-finite number": ({"args": [math.inf]}, PayloadError, "not a finite number"),
    # Sizes
    "arguments over the size limit": ({"args": ["x" * 1_000_001]}, PayloadError, "over the limit"),
    "meta over the size limit": ({"meta": {"x": "x" * 1_000_001}}, PayloadError, "meta is .* over the limit"),
}  # fmt: skip

#: Values at the edges of what is taken: a worker runs each of them.
TAKEN: dict[str, dict[str, Any]] = {
    "run_at on the earliest instant": {"run_at": EARLIEST},
    "run_at early, far east": {"run_at": datetime(1, 1, 2, 13, tzinfo=offset(13))},
    "run_at on the last instant": {"run_at": END - timedelta(microseconds=1)},
    "run_at with an offset PostgreSQL refuses": {"run_at": datetime(2030, 1, 1, tzinfo=offset(20))},
    "run_at with an offset in seconds": {"run_at": datetime(2001, 1, 1, tzinfo=timezone(timedelta(hours=5, seconds=7, microseconds=3)))},
    "timeout at its limit": {"timeout": MAX_SECONDS},
    "timeout tiny": {"timeout": 1e-300, "max_attempts": 1},
    "priority at both ends": {"priority": -32768},
    "priority at the top": {"priority": 32767},
    "max_attempts at its limit": {"max_attempts": MAX_ATTEMPTS},
    "an emoji": {"args": ["😀", {"🙂": "é"}]},
    "a backslash and u0000, as text": {"args": ["\\u0000", "\\\\u0000", "\\"], "kwargs": {"\\u0000": 1}},
    "nesting at the limit": {"args": _deep(MAX_DEPTH - 1)},
    "an integer of 4300 digits": {"args": [10**4299]},
    "the largest float": {"args": [1.7976931348623157e308, -5e-324]},
    "unique_key of 255 characters": {"unique_key": "ü" * 254 + "😀"},
}  # fmt: skip


def via_job_enqueue(options: dict[str, Any]) -> list[Job]:
    return [Job.enqueue(ANYTHING, **options)]


def via_task_enqueue(options: dict[str, Any]) -> list[Job]:
    options = dict(options)
    args, kwargs = options.pop("args", ()), options.pop("kwargs", {})
    if options:
        return [takes_anything.using(**options).enqueue(*args, **kwargs)]
    return [takes_anything.enqueue(*args, **kwargs)]


def via_insert(options: dict[str, Any]) -> list[Job]:
    return Job.enqueue_many([{"task": ANYTHING}, {"task": ANYTHING, **options}])


def via_copy(options: dict[str, Any]) -> list[Job]:
    plain = [{"task": ANYTHING, "args": [i]} for i in range(COPY_AT_LEAST)]
    return Job.enqueue_many([*plain, {"task": ANYTHING, **options}])


ENTRY_POINTS: dict[str, Callable[[dict[str, Any]], list[Job]]] = {
    "Job.enqueue": via_job_enqueue,
    "task.enqueue": via_task_enqueue,
    "enqueue_many INSERT": via_insert,
    "enqueue_many COPY": via_copy,
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", REFUSED)
def test_a_refused_value_raises_the_documented_error_writes_nothing_and_keeps_the_transaction(
    entry, case
):
    options, error, message = REFUSED[case]
    with transaction.atomic():
        mine = takes_anything.enqueue(1)
        with pytest.raises(error, match=message):
            ENTRY_POINTS[entry](options)
        after = takes_anything.enqueue(2)  # the transaction carries on
    assert list(Job.objects.order_by("pk").values_list("pk", flat=True)) == [mine.pk, after.pk]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("entry", ["Job.enqueue", "enqueue_many COPY"])
def test_a_refused_value_outside_a_transaction_writes_nothing(entry):
    options, error, message = REFUSED["run_at BC once in UTC"]
    with pytest.raises(error, match=message):
        ENTRY_POINTS[entry](options)
    assert not Job.objects.exists()


@pytest.mark.parametrize("name", UNSAYABLE_TIMES)
def test_a_time_whose_tzinfo_raises_is_refused_by_every_time_check(name):
    """limits' time checks caught ValueError and OverflowError of a tzinfo only: its
    TypeError, or an exception of its own, reached the caller unchanged."""
    from django.core.exceptions import ValidationError

    from django_pgjobs import limits, transitions
    from django_pgjobs.exceptions import RetryAfter, Snooze
    from django_pgjobs.testing import freeze_time

    when = UNSAYABLE_TIMES[name]
    said = "its time zone can.{1,2}t say its offset from UTC"  # str(ValidationError) escapes '
    checks: list[tuple[Callable[[], Any], type[Exception]]] = [
        (lambda: Snooze(until=when), InvalidOption),
        (lambda: RetryAfter(until=when), InvalidOption),
        (lambda: limits.validate_time(when), ValidationError),  # the model fields'
        (lambda: limits.before(when, timedelta(days=1)), InvalidOption),
        (lambda: limits.given_now(when), InvalidOption),  # drain's, maintenance's now=
        (lambda: transitions.retry_many(Job.objects.all(), include_completed=when), InvalidOption),
        (lambda: freeze_time(when).__enter__(), InvalidOption),
    ]
    job = takes_anything.enqueue(1)  # a job the checks must leave as it is
    for check, error in checks:
        with pytest.raises(error, match=said):
            check()
    assert list(Job.objects.values_list("pk", "state")) == [(job.pk, "available")]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", TAKEN)
def test_values_at_the_edges_are_taken_and_a_worker_runs_them(entry, case):
    jobs = ENTRY_POINTS[entry](TAKEN[case])
    stored = Job.objects.get(pk=jobs[-1].pk)
    assert as_stored(stored.args) == as_stored(jobs[-1].args)
    drain_everything()
    # Due later than any now a drain takes (its retry could lie past 9999-12-31): it
    # waits, read as any other job is.
    ran = Job.objects.filter(run_at__lt=LATEST_NOW).values_list("state", flat=True)
    assert set(ran) <= {"completed"}
    waits = Job.objects.filter(run_at__gte=LATEST_NOW).values_list("state", flat=True)
    assert set(waits) == ({"scheduled"} if stored.run_at >= LATEST_NOW else set())


def as_stored(value: Any) -> Any:
    """``value`` with numbers as floats: jsonb keeps a float of 16 digits or more as the
    integer it writes out (1e308 reads back as an int of 309 digits)."""
    if isinstance(value, list):
        return [as_stored(item) for item in value]
    if isinstance(value, dict):
        return {key: as_stored(item) for key, item in value.items()}
    if isinstance(value, float) or (type(value) is int and value.bit_length() <= 1024):
        return float(value)
    return value


def test_a_time_in_another_zone_is_stored_as_its_instant():
    moment = datetime(2031, 5, 1, 12, tzinfo=timezone(timedelta(hours=20, seconds=7)))
    job = Job.enqueue(ANYTHING, run_at=moment)
    assert Job.objects.get(pk=job.pk).run_at == moment == job.run_at


def test_depends_on_refuses_ids_no_row_can_have():
    with transaction.atomic():
        for bad in [2**63, 0, -1, True]:
            with pytest.raises(TypeError, match="depends_on takes saved jobs or job ids"):
                Job.enqueue(ANYTHING, depends_on=[bad])
        assert not Job.objects.exists()


@pytest.mark.parametrize(
    "depends_on, said",
    [
        # A string was read as its characters: "12" said "not '1'", of a job id it names.
        ("12", "depends_on must be a list of saved jobs or job ids, not the string '12'"),
        (b"12", "depends_on must be a list of saved jobs or job ids, not the string b'12'"),
        # An id alone raised Python's own "'int' object is not iterable".
        (12, r"depends_on must be a list of saved jobs or job ids, not 12 \(int\)"),
    ],
)
def test_depends_on_that_is_no_list_says_so_and_writes_nothing(depends_on, said):
    with transaction.atomic():
        for enqueue in (
            lambda: Job.enqueue(ANYTHING, depends_on=depends_on),
            lambda: Job.enqueue_many([{"task": ANYTHING, "depends_on": depends_on}]),
        ):
            with pytest.raises(TypeError, match=said):
                enqueue()
        assert not Job.objects.exists()  # and the transaction goes on


@pytest.mark.parametrize(
    "options, message",
    [
        ({"name": "tests.x\x00"}, "task name contains a NUL"),
        ({"name": "t" * 256}, "task name must be 1 to 255 characters"),
        ({"name": "t" * 223, "unique": True}, "1 to 222 characters"),
        ({"timeout": math.nan}, "timeout"),
        ({"priority": 40_000}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"queue": "no spaces"}, "invalid queue name"),
        ({"connector": "a/b"}, "not a connector name"),
        ({"unique_for": math.inf}, "unique_for"),
        ({"backoff": {"base": math.nan}}, "backoff base"),
        ({"backoff": {"max": 1e12}}, "backoff max"),
    ],
)
def test_the_task_decorator_refuses_options_no_job_could_have(options, message):
    from django_pgjobs import task

    def func() -> None: ...

    func.__module__ = "tests.defined_here"
    with pytest.raises(ValueError, match=message):
        task(**options)(func)


def test_the_task_decorator_refuses_what_is_no_function_saying_what_it_takes(request):
    from django_pgjobs import task, tasks

    def func() -> None: ...

    func.__module__, func.__qualname__ = "tests.defined_here", "func"
    once = task(func)
    request.addfinalizer(lambda: tasks._registry.pop(once.name, None))
    # docs/reference/models.md showed "@task  # or with options:" over "@task(...)":
    # pasted, the second decorator met the first's Task and raised AttributeError
    # ('Task' object has no attribute '__qualname__').
    with pytest.raises(TypeError, match=r"tests\.defined_here\.func is a task already: "):
        task(once)
    with pytest.raises(TypeError, match="is a task already"):
        task(queue="default")(once)
    # @task("mail") for @task(queue="mail") raised "'str' object has no attribute".
    with pytest.raises(TypeError, match=r"not 'mail' \(str\): options go by keyword"):
        task("mail")


@pytest.mark.parametrize(
    "option, said",
    [
        # Celery's and RQ's words for a delay, and Django Tasks' run_after: each was a
        # TypeError at enqueue, "Job.enqueue() got an unexpected keyword argument".
        ("countdown", "to run it later: run_at=timezone.now"),
        ("eta", "to run it later: run_at=timezone.now"),
        ("run_after", "to run it later: run_at=timezone.now"),
        ("priorty", "did you mean 'priority'"),
    ],
)
def test_using_refuses_an_option_enqueue_has_not_naming_those_it_has(option, said):
    with transaction.atomic():
        with pytest.raises(
            TypeError, match=f"takes_anything.using\\(\\) has no option '{option}'"
        ) as refused:
            takes_anything.using(**{option: 5}).enqueue(1)
        assert said in str(refused.value)
        assert "queue, priority, run_at" in str(refused.value)
        assert not Job.objects.exists()  # and the transaction goes on


@pytest.mark.parametrize(
    "method, said",
    [
        # A Celery user's first habit: "'Task' object has no attribute 'delay'" said
        # neither what to call nor where the guide is.
        ("delay", ".enqueue(42)"),
        ("apply_async", ".using(run_at=timezone.now() + timedelta(seconds=10)).enqueue(42)"),
        ("defer", ".enqueue(42)"),  # procrastinate
        ("defer_async", ".enqueue(42)"),
        ("send", ".enqueue(42)"),  # dramatiq
        ("send_with_options", ".using(run_at=timezone.now() + timedelta(seconds=10))"),
    ],
)
def test_another_librarys_enqueue_method_says_what_to_call_instead(method, said):
    with pytest.raises(AttributeError, match=f"has no attribute '{method}'") as refused:
        getattr(takes_anything, method)
    assert said in str(refused.value)
    assert "docs/howto/from-celery.md" in str(refused.value)
    assert refused.value.name == method and refused.value.obj is takes_anything
    assert not hasattr(takes_anything, method)  # still an AttributeError: hasattr works
    assert not Job.objects.exists()


def test_other_missing_attributes_of_a_task_get_pythons_own_error():
    import copy

    with pytest.raises(AttributeError) as missing:
        takes_anything.no_such_thing  # noqa: B018
    assert str(missing.value) == "'Task' object has no attribute 'no_such_thing'"
    # Copy and unpickling probe missing dunders (__setstate__, __deepcopy__) on an
    # instance whose fields aren't set yet: nothing may reach for them (a recursion).
    bare = object.__new__(type(takes_anything))
    for name in ("__setstate__", "__deepcopy__", "__getnewargs_ex__", "name", "func"):
        with pytest.raises(AttributeError, match=f"^'Task' object has no attribute '{name}'$"):
            getattr(bare, name)
    with pytest.raises(AttributeError, match=r"has no attribute 'delay' \(Celery"):
        bare.delay  # noqa: B018
    for copied in (copy.copy(takes_anything), copy.deepcopy(takes_anything)):
        assert (copied.name, copied.func) == (takes_anything.name, takes_anything.func)


def test_a_property_of_a_task_that_fails_keeps_its_own_attribute_error(monkeypatch):
    from django_pgjobs.binding import Binding
    from django_pgjobs.tasks import Task

    def broken(func: object) -> None:
        raise AttributeError("the binding's own error")

    monkeypatch.setattr(Binding, "of", broken)
    with pytest.raises(AttributeError, match=r"^the binding's own error$"):
        Task(takes_anything.func, "tests.fresh").binding  # noqa: B018


def test_a_naive_run_at_says_how_to_make_an_aware_one():
    with pytest.raises(
        InvalidOption, match=r"no instant: use django\.utils\.timezone\.now\(\) \+ timedelta"
    ):
        Job.enqueue(ANYTHING, run_at=datetime(2030, 1, 1))


# -- any input at all ----------------------------------------------------------------------

#: Characters PostgreSQL or UTF-8 refuse, and look-alikes they take.
ODD_CHARACTERS = st.sampled_from(
    ["\x00", "\ud800", "\udfff", "\ud83d", "😀", "é", "\\", "\\u0000", '"', "\n", "\x7f"]
)
TEXT = st.lists(st.one_of(st.characters(), ODD_CHARACTERS), max_size=6).map("".join)
INTEGERS = st.one_of(
    st.integers(),
    st.sampled_from([2**15, -(2**15) - 1, 2**31, 2**63, -(2**63) - 1]),
    st.integers(4298, 4302).map(lambda digits: 10**digits),  # Python prints up to 4300
)
NUMBERS = st.one_of(INTEGERS, st.floats(), st.booleans())
JSON = st.recursive(
    st.none() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
ZONES = st.one_of(
    st.just(UTC),
    st.integers(-24 * 60 + 1, 24 * 60 - 1).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    ),
    st.timezones(),
)
TIMES = st.one_of(
    st.datetimes(timezones=ZONES),
    st.datetimes(),  # naive
    st.sampled_from([date(2030, 1, 1), "2030-01-01T00:00:00Z", 0]),
)
PLAIN_JSON = st.recursive(
    st.none() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def mostly(plausible: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """Plausible values three times in four: the options after a refused one get their turn."""
    return st.one_of(plausible, plausible, plausible, hostile)


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "args": mostly(
            st.lists(PLAIN_JSON, max_size=3), st.one_of(st.lists(JSON, max_size=3), JSON)
        ),
        "kwargs": mostly(
            st.dictionaries(st.text(max_size=4), PLAIN_JSON, max_size=3),
            st.one_of(st.dictionaries(TEXT, JSON, max_size=3), JSON),
        ),
        "run_at": mostly(st.datetimes(timezones=ZONES), TIMES),
        "timeout": mostly(st.floats(1e-3, 1e4), NUMBERS),
        "priority": mostly(st.integers(-32768, 32767), NUMBERS),
        "max_attempts": mostly(st.integers(1, 30), NUMBERS),
        "unique_key": mostly(st.text(max_size=300), st.one_of(TEXT, INTEGERS)),
        "meta": mostly(st.dictionaries(st.text(max_size=4), PLAIN_JSON, max_size=2), JSON),
    },
)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(options=OPTIONS)
def test_any_input_is_refused_cleanly_or_runs(entry, options):
    """For any options: PayloadError or InvalidOption, nothing written and the transaction
    usable; or jobs that a worker runs to completion."""
    if entry == "task.enqueue":  # Python's call syntax takes nothing else
        assume(isinstance(options.get("args", []), list))
        assume(isinstance(options.get("kwargs", {}), dict))
    with transaction.atomic():
        try:
            with transaction.atomic():  # the caller's transaction, which must survive
                jobs = ENTRY_POINTS[entry](options)
        except (PayloadError, InvalidOption) as error:
            event(f"refused: {type(error).__name__} on {error.field}")
            assert not Job.objects.exists()
        else:
            event("taken")
            assert Job.objects.exists()
            drain_everything(jobs)
            assert set(Job.objects.values_list("state", flat=True)) == {"completed"}
        transaction.set_rollback(True)


def drain_everything(jobs: list[Job] | None = None) -> None:
    """Run every job, even those due in the year 9999: up to the latest now a drain
    takes (``limits.LATEST_NOW``, a year before the last time a row holds)."""
    latest = max((job.run_at for job in jobs or Job.objects.all()), default=None)
    now = max(latest, django_timezone.now()) if latest else django_timezone.now()
    Worker(concurrency=10).drain(now=min(now, LATEST_NOW - timedelta(microseconds=1)))


# -- settings, queues, schedules, connectors ---------------------------------------------------


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"backoff_base": math.nan}, "backoff_base must be a number of seconds"),
        ({"backoff_max": 1e12}, "backoff_max must be a number of seconds"),
        ({"backoff_jitter": 2}, "backoff_jitter must be a fraction"),
        ({"backoff_strategy": "random"}, "backoff_strategy must be one of"),
        ({"priority": 2**15}, "priority must be between"),
        ({"max_attempts": 0}, "max_attempts must be between 1"),
        ({"concurrency": -1}, "concurrency must be between 0"),
        ({"concurrency": 2**40}, "concurrency must be between 0"),
        ({"paused": "yes"}, "paused must be True or False"),
    ],
)
def test_queues_no_worker_could_use_are_refused_by_settings_save_and_forms(
    options, fragment, settings
):
    from django.core.exceptions import ValidationError

    from django_pgjobs.checks import check_settings
    from django_pgjobs.models import Queue

    settings.PGJOBS = {"QUEUES": {"default": {}, "odd": options}}
    found = [error.msg for error in check_settings()]
    assert any(fragment in message and "'odd'" in message for message in found), found
    with pytest.raises(ValidationError, match=fragment):
        Queue(name="odd", **options).save()
    assert not Queue.objects.filter(name="odd").exists()


def test_a_queue_name_with_nul_is_refused_by_save():
    from django.core.exceptions import ValidationError

    from django_pgjobs.models import Queue

    with pytest.raises(ValidationError, match="invalid queue name"):
        Queue(name="a\x00b").save()


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"args": ["a\x00"]}, "NUL"),
        ({"kwargs": {"\ud800": 1}}, "surrogate"),
        ({"args": _deep(MAX_DEPTH + 1)}, "nested more than"),
        ({"priority": 40_000}, "priority"),
        ({"queue": "no spaces"}, "invalid queue name"),
    ],
)
def test_schedules_in_settings_that_no_job_could_hold_fail_the_check(options, fragment, settings):
    from django_pgjobs.checks import check_settings

    entry = {"cron": "* * * * *", "task": "testproject.demo.tasks.add", **options}
    settings.PGJOBS = {"SCHEDULES": {"odd": entry}}
    found = [error.msg for error in check_settings()]
    assert any(fragment in message for message in found), found


def test_a_schedule_name_with_nul_fails_the_check(settings):
    from django_pgjobs.checks import check_settings

    entry = {"cron": "* * * * *", "task": "testproject.demo.tasks.add"}
    settings.PGJOBS = {"SCHEDULES": {"a\x00b": entry}}
    assert any("NUL" in error.msg for error in check_settings())


SCHEDULE_FIELDS = st.fixed_dictionaries(
    {
        "name": mostly(st.text(min_size=1, max_size=20), TEXT),
        "cron": mostly(
            st.sampled_from(["* * * * *", "0 3 * * *", "@yearly"]),
            st.sampled_from(["nonsense", "* * * * *\x00", "\ud800"]),
        ),
        "task": mostly(st.just(ANYTHING), st.sampled_from(["no.such", "no.such\x00task"])),
    },
    optional={
        "args": mostly(st.lists(PLAIN_JSON, max_size=3), JSON),
        "kwargs": mostly(st.dictionaries(st.text(max_size=4), PLAIN_JSON, max_size=3), JSON),
        "queue": mostly(st.sampled_from(["", "default"]), st.sampled_from(["no such", "x\x00"])),
        "priority": mostly(st.none(), NUMBERS),
        "timezone": mostly(
            st.sampled_from(["UTC", "Europe/Berlin", "Pacific/Kiritimati"]),
            st.sampled_from(["Nowhere/Else", "UTC\x00", "\udc00"]),
        ),
    },
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=SCHEDULE_FIELDS)
def test_any_schedule_is_refused_by_save_or_fires(fields):
    """Schedule.save(): a ValidationError and nothing written, or a schedule whose due
    tick the scheduler fires (enqueueing its job, or recording why it could not)."""
    from django.core.exceptions import ValidationError

    from django_pgjobs.models import Schedule
    from django_pgjobs.scheduler import Scheduler

    with transaction.atomic():
        try:
            with transaction.atomic():
                schedule = Schedule(**fields)
                schedule.save()
        except ValidationError:
            event("refused")
            assert not Schedule.objects.exists()
        else:
            event("saved")
            now = django_timezone.now()
            due = schedule.cron_schedule().latest_at_or_before(now)
            Schedule.objects.update(next_fire_at=due)
            Scheduler(routines=[]).run_once(now)
            tick = schedule.ticks.get()
            assert tick.job_id is not None or tick.error
            if tick.job_id:
                drain_everything()
        transaction.set_rollback(True)


CONNECTOR_FIELDS = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from(["hook", "a b", "x\x00"]), TEXT),
        "kind": st.sampled_from(["http", "smtp", "nope", "http\x00"]),
        "config": st.one_of(
            st.fixed_dictionaries({"url": st.sampled_from(["http://127.0.0.1:9", "x"])}),
            st.dictionaries(TEXT, JSON, max_size=3),
            JSON,
        ),
        "description": st.one_of(st.just(""), TEXT),
    }
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=CONNECTOR_FIELDS)
def test_any_connector_is_refused_by_save_or_stored_and_read_back(fields):
    from django.core.exceptions import ValidationError

    from django_pgjobs.models import Connector

    with transaction.atomic():
        try:
            with transaction.atomic():
                Connector(**fields).save()
        except ValidationError:
            event("refused")
            assert not Connector.objects.exists()
        else:
            event("saved")
            stored = Connector.objects.get()
            assert repr(stored) and stored.config == Connector(**fields).config
        transaction.set_rollback(True)


@pytest.mark.django_db
@pytest.mark.parametrize("concurrency", [0, -1, 2**31, 2**40, "3", True, 1.5])
def test_a_connector_concurrency_no_row_can_hold_is_refused_on_save(concurrency):
    """2**40 reached the database as a DataError (integer out of range), 0 as the
    CHECK's IntegrityError: the caller's transaction was aborted. A Queue refused both."""
    from django.core.exceptions import ValidationError

    from django_pgjobs.models import Connector

    hook = Connector(
        name="hook", kind="http", config={"url": "http://127.0.0.1:9"}, concurrency=concurrency
    )
    with transaction.atomic():
        with pytest.raises(ValidationError) as refused:
            hook.save()
        assert list(refused.value.message_dict) == ["concurrency"]
        assert not Connector.objects.exists()  # the transaction goes on
    hook.concurrency = 2**31 - 1
    hook.save()
    assert Connector.objects.get().concurrency == 2**31 - 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("description", None, "must be a string, not NoneType None"),
        ("description", 5, "must be a string, not int 5"),
        ("kind", None, "must be a string of 1 to 50 characters"),
    ],
)
def test_a_connector_text_field_that_is_no_string_is_refused_saying_what_it_takes(
    field, value, problem
):
    """A description, which has no length limit, was refused as "must be a string of 1
    to None characters"."""
    from django.core.exceptions import ValidationError

    from django_pgjobs.models import Connector

    hook = Connector(name="hook", kind="http", config={"url": "http://127.0.0.1:9"})
    setattr(hook, field, value)
    with transaction.atomic():
        with pytest.raises(ValidationError) as refused:
            hook.save()
        assert refused.value.message_dict == {field: [problem]}
        assert not Connector.objects.exists()  # the transaction goes on


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name, problem",
    [("api\x00key", "contains a NUL character"), ("\ud800", "contains a lone surrogate")],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_a_secret_name_no_row_can_hold_is_refused_on_save_and_keeps_the_transaction(
    name, problem, existing
):
    """The name is stored in secret_names (jsonb), which PostgreSQL refused with a
    DataError: the caller's transaction was aborted. Its value is encrypted: any text."""
    from django.core.exceptions import ValidationError

    from django_pgjobs.models import Connector

    if existing:
        Connector(name="hook", kind="http", config={"url": "http://127.0.0.1:9"}).save()
    stored = list(Connector.objects.values_list("name", "secret_names", "encrypted_secrets"))
    with transaction.atomic():
        connector = Connector.objects.filter(name="hook").first() or Connector(
            name="hook", kind="http", config={"url": "http://127.0.0.1:9"}
        )
        connector.set_secrets({"token": "t\x00\ud800", name: "x"})
        with pytest.raises(ValidationError) as refused:
            connector.save()
        assert problem in refused.value.message_dict["secret_names"][0]
        assert list(Connector.objects.values_list("name", "secret_names", "encrypted_secrets")) == (
            stored
        )  # nothing written, and the transaction still answers
    connector.set_secrets({"token": "t\x00\ud800"})
    connector.save()
    assert Connector.objects.get(name="hook").get_secrets() == {"token": "t\x00\ud800"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change, said",
    [
        # Stored as it was: each job using the connector then failed with an AttributeError.
        (lambda c: c.set_secrets(["token"]), "must be a dict of secret names to values, not list"),
        (lambda c: c.update_secrets([("token", "x")]), "must be a dict of secret names"),
        # sorted() of the names was a TypeError ('<' not supported between 'str' and 'int').
        (lambda c: c.set_secrets({"token": "x", 1: "y"}), "names must be strings, not int 1"),
        (lambda c: c.set_secrets({"token": object()}), "'token' is no value JSON can hold"),
        # Each letter was taken for a name and removed.
        (lambda c: c.update_secrets({}, remove="token"), "remove must be a list of secret names"),
        # An unhashable name was dict.pop's TypeError; a number was taken, removing nothing.
        (lambda c: c.update_secrets({}, remove=[["token"]]), "remove must be a list of secret"),
        (lambda c: c.update_secrets({}, remove=[1]), "remove must be a list of secret names"),
    ],
)
def test_secrets_that_are_no_names_and_values_are_refused_changing_nothing(change, said):
    from django.core.exceptions import ValidationError

    from django_pgjobs.models import Connector

    connector = Connector(name="hook", kind="http", config={"url": "http://127.0.0.1:9"})
    connector.set_secrets({"token": "t", "o": "kept"})
    connector.save()
    with pytest.raises(ValidationError) as refused:
        change(connector)
    assert said in refused.value.message_dict["secrets"][0]
    assert connector.get_secrets() == {"token": "t", "o": "kept"}
    assert connector.secret_names == ["o", "token"]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [["http"], {"http": 1}, 5])
@pytest.mark.parametrize(
    "change",
    [lambda c: c.set_secrets({"token": "x"}), lambda c: c.update_secrets({"token": "x"})],
)
def test_secrets_of_a_connector_whose_kind_is_no_string_are_refused_changing_nothing(kind, change):
    # A list or a dict (unhashable) failed the kinds' lookup with a bare TypeError.
    from django.core.exceptions import ValidationError

    from django_pgjobs.connectors import UnknownConnectorKind, get_kind
    from django_pgjobs.models import Connector

    connector = Connector(name="hook", kind="http", config={"url": "http://127.0.0.1:9"})
    connector.set_secrets({"token": "t"})
    connector.kind = kind
    with pytest.raises(ValidationError) as refused:
        change(connector)
    said = refused.value.message_dict["kind"][0]
    assert said == f"must be a string naming a connector kind, not {kind!r}"
    assert connector.get_secrets() == {"token": "t"}
    with pytest.raises(UnknownConnectorKind, match="unknown connector kind"):
        get_kind(kind)


# -- digits that str.isdigit accepts and int() refuses ---------------------------------


ODD_DIGITS = ["²", "①", "1²", "٣"]  # superscript, circled, mixed; Arabic-Indic (int() reads it)


@pytest.mark.parametrize("digits", ODD_DIGITS)
def test_odd_digits_are_refused_or_ignored_wherever_a_number_is_read(db, digits):
    from django_pgjobs import cron
    from django_pgjobs.connectors.http import retry_after
    from django_pgjobs.selection import (
        InvalidSelection,
        parse_duration,
        parse_id,
        parse_instant,
    )

    with pytest.raises(cron.InvalidCron):  # a range bound: was int()'s ValueError
        cron.timing(f"1-{digits} * * * *")
    assert retry_after(digits) is None  # a Retry-After header nobody can read
    with pytest.raises(InvalidSelection):
        parse_id(digits)
    with pytest.raises(InvalidSelection):  # --older-than, --max-age: was 3 seconds
        parse_duration(digits)
    with pytest.raises(InvalidSelection):  # --since 3h: was three hours ago
        parse_instant(f"{digits}h")
    worker = Worker(concurrency=1)
    worker._on_notify("pgjobs_control", f"cancel:{digits}")  # ignored, not a crash
