"""Rows written by SQL that the Django Tasks backend and connectors read back:
get_result, the worker relaying Django's signals and a connector's build show each
safely, and say what they can't give; odd task paths are refused where defined."""

from __future__ import annotations

import json

import pytest

from django_pgjobs import payload
from django_pgjobs.compat import InvalidTask, TaskResultStatus, task_backends
from tests.django_tasks_for_tests import count_items
from tests.test_hardening_rows import insert_job

try:
    from django.tasks import task as django_task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task as django_task

COUNT = "'tests.django_tasks_for_tests.count_items'"


def nested(levels: int) -> str:
    """A JSON array ``levels`` deep: Python's json reads it (up to about 1,500), and
    Django's TaskResult, which copies args and kwargs by recursion, can't past 1,000."""
    return "[" * levels + "]" * levels


def jsonb(text: str) -> str:
    return "'" + text.replace("'", "''") + "'::jsonb"


def get_result(job_id: int):
    return task_backends["default"].get_result(str(job_id))


@pytest.mark.parametrize(
    ("column", "value"),
    [("args", f"[{nested(1100)}]"), ("kwargs", f'{{"items": {nested(1100)}}}')],
)
def test_get_result_of_arguments_nested_deeper_than_a_task_result_holds(db, column, value):
    """Args 1,100 deep (enqueue refuses past 100) raised RecursionError from Django's
    TaskResult: such arguments read as none, as arguments of the wrong shape do."""
    job_id = insert_job(task=COUNT, **{"args": "'[]'", column: jsonb(value)})
    result = get_result(job_id)
    assert result.id == str(job_id) and result.status == TaskResultStatus.READY
    assert (result.args, result.kwargs) == ([], {})


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_a_django_task_of_arguments_nested_that_deep(worker):
    """The worker ran the task, wrote its outcome, then raised RecursionError from
    relaying Django's task_finished, out of the worker's loop."""
    args = f"[{nested(1100)}]"
    job_id = insert_job(task=COUNT, args=jsonb(args))
    if isinstance(payload.loads(args), payload.Unreadable):  # Python 3.11's json: no run
        assert worker.drain() == {"discarded": 1}
        return
    assert worker.drain() == {"completed": 1}
    assert get_result(job_id).return_value == 1


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        ("9" * 5000, "its JSON can't be read by Python"),
        (nested(3000), "its JSON is nested deeper than Python can read"),
    ],
)
def test_a_result_python_cant_read_is_no_string_but_a_clear_error(db, stored, problem):
    """Its return_value was the stored JSON's text, a str no task returned."""
    job_id = insert_job(
        task=COUNT, state="'completed'", attempt="1", finished_at="now()", result=jsonb(stored)
    )
    result = get_result(job_id)
    assert result.status == TaskResultStatus.SUCCESSFUL
    with pytest.raises(ValueError, match=f"job {job_id}'s return value can't be read: {problem}"):
        result.return_value  # noqa: B018


def test_get_result_reads_no_value_over_what_the_api_shows(db, settings):
    """A row of a 1 MB result and 1 MB of arguments was read whole, however large."""
    settings.PGJOBS = {**settings.PGJOBS, "MAX_PAYLOAD_BYTES": 1_000}
    big = json.dumps(["x" * 1_000_000])
    job_id = insert_job(
        task=COUNT, state="'completed'", attempt="1", finished_at="now()",
        args=jsonb(f"[{big}]"), kwargs=jsonb(f'{{"a": {big}}}'), result=jsonb(big),
    )  # fmt: skip
    result = get_result(job_id)
    assert (result.args, result.kwargs) == ([], {})
    said = f"job {job_id}'s return value can't be read: not shown: its JSON is 1,000,004 bytes"
    with pytest.raises(ValueError, match=said):
        result.return_value  # noqa: B018


def test_a_result_within_the_limits_reads_as_stored(db):
    job = count_items.enqueue([1, 2, 3])
    assert get_result(int(job.id)).args == [[1, 2, 3]]


@pytest.mark.parametrize(
    ("module", "problem"),
    [("odd\x00module", "contains a NUL character"), ("m" * 300, "must be 1 to 255 characters")],
)
def test_a_django_task_whose_path_no_job_can_hold_is_refused_each_time(module, problem):
    """@task raised pgjobs' InvalidOption, not the InvalidTask Django's callers catch,
    and left the path registered half: defined again, the task passed, and
    get_result found it for jobs of that name."""
    from django_pgjobs import bridge

    def odd(value: int) -> int:
        return value

    odd.__module__, odd.__qualname__ = module, "odd"  # as if defined there
    for _ in range(2):
        with pytest.raises(InvalidTask, match=f"task name {problem}"):
            django_task(odd)
    assert bridge.django_task_named(f"{module}.odd") is None


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        (nested(3000), "its JSON is nested deeper than Python can read"),
        ('{"url": "http://127.0.0.1:9/", "timeout": ' + "9" * 5000 + "}",
         "its JSON can't be read by Python"),
    ],
)  # fmt: skip
def test_a_connector_config_python_can_t_read_says_why(worker, stored, problem):
    """It said "config: must be a JSON object, not Unreadable", a class of ours."""
    from django_pgjobs import Job
    from django_pgjobs.connectors import get_connector
    from django_pgjobs.connectors.errors import ConnectorMisconfigured
    from tests.factories import ConnectorFactory
    from tests.test_hardening_rows import sql

    hook = ConnectorFactory(name="hook")
    sql("UPDATE pgjobs_connector SET config = %s::jsonb WHERE id = %s", [stored, hook.pk])
    said = f"connector 'hook' is misconfigured: config: can't be read: {problem}"
    with pytest.raises(ConnectorMisconfigured, match=said):
        get_connector("hook")
    job = Job.enqueue("django_pgjobs.connectors.tasks.call", connector="hook", max_attempts=1)
    assert worker.drain() == {"discarded": 1}
    job.refresh_from_db()
    assert "Unreadable" not in job.errors[0]["error"] and problem in job.errors[0]["error"]
