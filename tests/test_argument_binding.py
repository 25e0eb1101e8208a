"""A plain task's arguments that can't bind to its function: refused at enqueue with
InvalidArguments saying which, and a row that holds them anyway (enqueued by newer code
in a rolling deploy, written by SQL, or the function changed since) fails its attempts
with ArgumentMismatch saying which, not a TypeError from the call, retried as newer code
may run it (tests/test_version_skew.py)."""

from __future__ import annotations

import functools
import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from django_pgjobs import Job, task
from django_pgjobs.api.tokens import issue
from django_pgjobs.binding import Binding
from django_pgjobs.enqueue import JobSpec
from django_pgjobs.exceptions import InvalidArguments
from testproject.demo.tasks import add, total
from tests.factories import ConnectorFactory, ScheduleFactory
from tests.tasks_for_typed import typed_total
from tests.test_hardening_rows import insert_job

pytestmark = pytest.mark.django_db

ADD = "testproject.demo.tasks.add"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ([1, 2, 3], {}, "args: add() takes at most 2 positional argument(s), got 3"),
        ([1], {}, "args: missing argument 'b' of add()"),
        ([], {}, "args: missing argument 'a' of add()"),
        ([1, 2], {"c": 3}, "kwargs['c']: add() has no parameter 'c'"),
        ([1], {"a": 2}, "kwargs['a']: 'a' is given in args as well"),
    ],
)
def test_enqueue_refuses_arguments_that_dont_bind_saying_which(args, kwargs, message):
    with transaction.atomic():
        with pytest.raises(InvalidArguments) as refused:
            Job.enqueue(ADD, args=args, kwargs=kwargs)
        assert str(refused.value) == message
        with pytest.raises(InvalidArguments, match=re.escape(message)):
            add.enqueue(*args, **kwargs)
        with pytest.raises(InvalidArguments):
            Job.enqueue_many([JobSpec(ADD, args=[1, 2])] * 150 + [JobSpec(ADD, args, kwargs)])
        assert not Job.objects.exists()
        Job.enqueue(ADD, args=[1], kwargs={"b": 2})  # the transaction goes on


@pytest.mark.parametrize("option", ["queue", "priority", "run_at", "max_attempts"])
def test_an_enqueue_option_given_as_an_argument_says_where_it_goes(option):
    """`add.enqueue(1, 2, queue="mail")` reads as a job's option, as Job.enqueue takes it."""
    with pytest.raises(InvalidArguments) as refused:
        add.enqueue(1, 2, **{option: "x"})
    assert str(refused.value) == (
        f"kwargs['{option}']: add() has no parameter '{option}' (to set the job's "
        f"{option}, enqueue with add.using({option}=...).enqueue(...))"
    )
    with pytest.raises(InvalidArguments, match=re.escape(f"typed_total.using({option}=...)")):
        typed_total.enqueue(**{option: 1})
    with pytest.raises(InvalidArguments) as refused:
        add.enqueue(1, 2, args=[3])  # no option of .using()
    assert str(refused.value) == "kwargs['args']: add() has no parameter 'args'"
    assert not Job.objects.exists()


def test_what_a_worker_passes_in_itself_is_not_required_at_enqueue():
    # a pipeline's gather step gets `results` from the worker
    assert total.using(pass_results=True).enqueue().pk
    assert total.enqueue(results=[1, 2]).pk  # or from its caller
    assert typed_total.using(pass_results=True).enqueue(scale=2).pk


@pytest.mark.parametrize("gather", [total, typed_total], ids=["plain", "typed"])
def test_a_gather_step_enqueued_without_pass_results_is_refused(gather, settings):
    # Its `results` come only with pass_results=True: without, it was accepted and then
    # failed every attempt with ArgumentMismatch ("missing argument 'results'"), which
    # blames a rolling deploy. A schedule's jobs never get them either.
    expected = (
        f"args: missing argument 'results' of {gather.func.__qualname__}() (its "
        "dependencies' results are passed only with pass_results=True)"
    )
    with transaction.atomic():
        for call in (
            lambda: gather.enqueue(),
            lambda: Job.enqueue(gather.name),
            lambda: Job.enqueue_many([gather.spec()]),
        ):
            with pytest.raises(InvalidArguments) as refused:
                call()
            assert str(refused.value) == expected
        assert not Job.objects.exists()
    with pytest.raises(ValidationError, match=re.escape(expected)):
        ScheduleFactory(name="gather", task=gather.name, args=[]).full_clean()


def test_the_http_api_refuses_them_with_a_400_naming_the_argument(client):
    token = issue("ci", ["*"])[1]
    response = client.post(
        "/jobs",
        json.dumps({"task": ADD, "args": [1, 2, 3]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    assert "takes at most 2 positional argument(s), got 3" in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ("[1, 2, 3]", "{}", "takes at most 2 positional argument(s), got 3"),
        ("[1]", "{}", "missing argument 'b' of add()"),
        ("[1, 2]", '{"c": 3}', "add() has no parameter 'c'"),
    ],
)
def test_a_row_whose_arguments_dont_bind_fails_its_attempt_saying_which(
    worker, args, kwargs, message
):
    pk = insert_job(args=f"'{args}'", kwargs=f"'{kwargs}'", max_attempts="20")
    worker.drain()
    job = Job.objects.get(pk=pk)
    assert (job.state, job.attempt) == ("retryable", 1)
    assert len(job.errors) == 1
    error = job.errors[0]["error"]
    fit = "its arguments don't fit the task's parameters in this worker"
    assert error.startswith(f"ArgumentMismatch: job {pk}: {fit}: ")
    assert message in error


def test_a_task_error_that_is_a_type_error_is_still_retried(worker):
    pk = insert_job(args="""'[1, "two"]'""", max_attempts="3")  # 1 + "two" raises TypeError
    worker.drain()
    job = Job.objects.get(pk=pk)
    assert job.state == "retryable" and "TypeError" in job.errors[0]["error"]


def keyword_only(a, /, b, *, c, d=4): ...


def gather(results, *rest, **options): ...


def only_and_options(a, /, **options): ...


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "problem"),
    [
        (keyword_only, [1, 2], {"c": 3}, None),
        (keyword_only, [1], {"b": 2, "c": 3}, None),
        (keyword_only, [1, 2], {}, "missing argument 'c'"),
        (keyword_only, [], {"a": 1, "b": 2, "c": 3}, "'a' is positional-only: pass it in args"),
        (keyword_only, [1, 2, 3], {"c": 3}, "takes at most 2 positional"),
        (keyword_only, [1, 2], {"c": 3, 5: 1}, "keyword names must be strings"),
        (gather, [1, 2, 3], {"x": 1}, None),
        (only_and_options, [], {"a": 1}, "missing argument 'a'"),  # goes to **options
        (only_and_options, [1], {"a": 2}, None),
        (gather, [1], {"results": 2}, "'results' is given in args as well"),
    ],
)
def test_a_binding_binds_as_a_call_would(func, args, kwargs, problem):
    binding = Binding(func)
    if problem is None:
        binding.check(args, kwargs)
        binding.check(args, kwargs, enqueue=False)
        func(*args, **kwargs)
    else:
        with pytest.raises(InvalidArguments, match=re.escape(problem)):
            binding.check(args, kwargs)


def test_when_the_job_runs_what_a_worker_passes_in_is_required_too():
    Binding(gather).check([], {})
    with pytest.raises(InvalidArguments, match=re.escape("missing argument 'results' of gather()")):
        Binding(gather).check([], {}, enqueue=False)


def with_session(func):
    """A decorator that passes its function an argument of its own, as many do:
    functools.wraps copies the name and __wrapped__, not the parameters a call binds to."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func("session", *args, **kwargs)

    return wrapper


@task
@with_session
def with_a_session(session, x):
    return [session, x]


def test_a_decorator_that_passes_its_own_argument_is_bound_as_the_wrapper(worker):
    job = with_a_session.enqueue(x=1)
    worker.drain()
    job.refresh_from_db()
    assert (job.state, job.result) == ("completed", ["session", 1])


def send(to, *, api_key):
    return to


class Client:
    def __init__(self, api_key):
        self.api_key = api_key

    def __repr__(self):
        return f"Client(api_key={self.api_key!r})"

    def __call__(self, to):
        return to


@pytest.mark.parametrize(
    ("func", "name"),
    [
        (functools.partial(send, api_key="sk-live-secret"), "send"),
        (Client("sk-live-secret"), "Client"),
    ],
)
def test_a_refusal_names_the_function_never_shows_its_repr(func, name):
    """A partial's repr, or an instance's, shows the values it holds: a secret among
    them went into the refusal (the HTTP API's 400) and the job's error."""
    with pytest.raises(InvalidArguments) as refused:
        Binding(func).check([1, 2], {})
    assert "sk-live-secret" not in str(refused.value)
    assert f"{name}() takes at most 1 positional" in str(refused.value)


def test_a_schedule_whose_arguments_dont_bind_is_refused_on_the_field(admin_client):
    """Every tick of it enqueued nothing (InvalidArguments): refused when saved instead,
    on the form's field, as a typed task's schedule is."""
    schedule = ScheduleFactory.build(task=ADD, args=[1, 2, 3])
    with pytest.raises(ValidationError) as refused:
        schedule.full_clean()
    assert "takes at most 2 positional argument(s), got 3" in refused.value.message_dict["args"][0]
    schedule = ScheduleFactory.build(task=ADD, args=[1], kwargs={"c": 3})
    with pytest.raises(ValidationError) as refused:
        schedule.full_clean()
    assert "add() has no parameter 'c'" in refused.value.message_dict["kwargs"][0]
    ScheduleFactory.build(task=ADD, args=[1], kwargs={"b": 3}).full_clean()


# -- a required `connector`: passed in only to a job that names a connector ------------------

POST_TO = "tests.tasks_for_connectors.post_to"
TYPED_POST = "tests.tasks_for_typed.typed_post"
NO_CONNECTOR = "missing argument 'connector' of {}() (the job names no connector: pass connector=)"


@pytest.mark.parametrize(("task_name", "func"), [(POST_TO, "post_to"), (TYPED_POST, "typed_post")])
def test_a_required_connector_on_a_job_naming_none_is_refused_at_enqueue(task_name, func):
    """`connector` counted as always passed in: the job was taken, then failed every
    attempt (ArgumentMismatch for a plain task, a TypeError for a typed one)."""
    with transaction.atomic():
        with pytest.raises(InvalidArguments) as refused:
            Job.enqueue(task_name, args=[{"a": 1}])
        assert str(refused.value) == "args: " + NO_CONNECTOR.format(func)
        with pytest.raises(InvalidArguments, match="'connector'"):
            Job.enqueue_many([JobSpec(task_name, args=[{"a": 1}])])
        assert not Job.objects.exists()
        ConnectorFactory(name="hook")
        assert Job.enqueue(task_name, args=[{"a": 1}], connector="hook").connector == "hook"


def test_a_task_naming_its_own_connector_needs_none_from_the_job():
    ConnectorFactory(name="mailer", kind="smtp", config={"host": "127.0.0.1"})
    assert Job.enqueue("tests.tasks_for_connectors.welcome", args=["a@example.com"]).pk


@pytest.mark.parametrize(("task_name", "func"), [(POST_TO, "post_to"), (TYPED_POST, "typed_post")])
def test_a_schedule_of_a_task_that_needs_a_connector_it_names_none_of_is_refused(task_name, func):
    schedule = ScheduleFactory.build(task=task_name, args=[{"a": 1}])
    with pytest.raises(ValidationError) as refused:
        schedule.full_clean()
    assert NO_CONNECTOR.format(func) in refused.value.message_dict["args"][0]


@pytest.mark.parametrize(("task_name", "func"), [(POST_TO, "post_to"), (TYPED_POST, "typed_post")])
def test_a_row_needing_a_connector_it_names_none_of_fails_saying_so(worker, task_name, func):
    pk = insert_job(task=f"'{task_name}'", args="""'[{"a": 1}]'""", max_attempts="20")
    worker.drain()
    job = Job.objects.get(pk=pk)
    assert (job.state, job.attempt) == ("retryable", 1)
    assert job.errors[0]["error"].startswith("ArgumentMismatch: ")
    assert NO_CONNECTOR.format(func) in job.errors[0]["error"]
