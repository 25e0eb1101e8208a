"""PGJOBS["MIDDLEWARE"]: hooks around each job's execution and around enqueue."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_pgjobs import Job, middleware
from django_pgjobs.checks import check_settings
from django_pgjobs.states import JobState
from testproject.demo.models import Run
from testproject.demo.tasks import add, always_fails, async_sleep
from tests import conftest
from tests.conftest import wait_until
from tests.middleware_for_tests import SEEN_IN_LOOP

S = JobState
HOOKS = "tests.middleware_for_tests"


@pytest.fixture
def use_middleware(settings):
    def use(*entries: object) -> None:
        settings.PGJOBS = {**settings.PGJOBS, "MIDDLEWARE": list(entries)}

    return use


def tags() -> list[str]:
    return list(Run.objects.order_by("pk").values_list("tag", flat=True))


@pytest.mark.django_db
def test_execute_hooks_wrap_the_task_in_order_first_outermost(use_middleware, worker):
    use_middleware(f"{HOOKS}.outer", f"{HOOKS}.inner")
    job = add.enqueue(2, 3)
    worker.drain()
    assert tags() == ["outer:before:add", "inner:before", "inner:after:5", "outer:after"]
    job.refresh_from_db()
    assert (job.state, job.result) == (S.COMPLETED, 5)


@pytest.mark.django_db
def test_a_class_hooks_enqueue_and_execute_and_sees_the_jobs_meta(use_middleware, worker):
    use_middleware(f"{HOOKS}.Stamp")
    jobs = [add.enqueue(1, 1), *Job.enqueue_many([{"task": add.name, "args": [2, 2]}])]
    assert [job.meta for job in Job.objects.filter(pk__in=[j.pk for j in jobs])] == [
        {"stamp": "stamped"}
    ] * 2
    worker.drain()
    assert tags() == ["stamp:stamped", "stamp:stamped"]


@pytest.mark.django_db
def test_an_async_hook_wraps_async_tasks_in_their_loop_and_lets_sync_ones_pass(
    use_middleware, worker
):
    use_middleware(f"{HOOKS}.InLoop", f"{HOOKS}.inner")
    running = async_sleep.enqueue(0.01)
    plain = add.enqueue(1, 2)
    worker.drain()
    assert running.pk in SEEN_IN_LOOP and plain.pk not in SEEN_IN_LOOP
    assert tags().count("inner:before") == 2  # sync hooks wrap async tasks too
    assert {j.state for j in Job.objects.all()} == {S.COMPLETED}


@pytest.mark.django_db
def test_a_hook_can_decide_that_a_failure_is_not_worth_a_retry(use_middleware, worker):
    use_middleware(f"{HOOKS}.discard_value_errors")
    job = always_fails.enqueue("bad input")
    worker.drain()
    job.refresh_from_db()
    assert job.state == S.DISCARDED
    assert "DiscardJob: not retried: bad input" in job.errors[-1]["error"]


@pytest.mark.django_db
def test_a_hook_that_raises_fails_the_attempt_like_the_task_would(use_middleware, worker):
    def broken(context, call_next):
        raise RuntimeError("middleware bug")

    use_middleware(broken)
    job = add.enqueue(1, 1)
    worker.drain()
    job.refresh_from_db()
    assert job.state == S.RETRYABLE and "middleware bug" in job.errors[-1]["error"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("tests.middleware_for_tests.nothing_here", "can't be imported"),
        ("collections.OrderedDict", "neither a function"),
        (42, "neither a function"),
    ],
)
def test_a_bad_entry_fails_the_system_check_and_the_workers_start(use_middleware, entry, message):
    use_middleware(entry)
    errors = check_settings()
    assert [e.id for e in errors] == ["pgjobs.E040"] and message in errors[0].msg
    with pytest.raises(ImproperlyConfigured, match=message):
        middleware.chain()


def test_without_middleware_the_chain_is_empty(use_middleware):
    use_middleware()
    assert middleware.chain() == middleware.Chain()


@pytest.mark.slow
def test_a_real_worker_process_runs_the_configured_hooks(worker_process):
    job = add.enqueue(20, 22)
    process = worker_process("--burst", env={"PGJOBS_MIDDLEWARE": f"{HOOKS}.outer,{HOOKS}.Stamp"})
    assert process.wait(60) == 0, process.output()
    job.refresh_from_db()
    assert job.state == S.COMPLETED
    # Enqueued here, without the Stamp: the worker's hook sees no stamp.
    assert wait_until(tags) == ["outer:before:add", "stamp:None", "outer:after"]


def test_a_built_in_middleware_without_its_library_fails_the_check_with_the_install_line(
    use_middleware, monkeypatch
):
    import builtins

    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name.startswith(("prometheus_client", "opentelemetry")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    for entry, extra in (
        ("django_pgjobs.metrics.PrometheusMiddleware", "prometheus"),
        ("django_pgjobs.tracing.TracingMiddleware", "opentelemetry"),
    ):
        use_middleware(entry)
        errors = check_settings()
        assert [e.id for e in errors] == ["pgjobs.E040"]
        # Not "django-pgjobs[...]": the package is installed from a clone, not PyPI, where
        # that line finds no such distribution. The extra's own requirement installs.
        (requirement,) = conftest.optional_dependencies()[extra]
        assert f'pip install "{requirement}"' in errors[0].msg
        assert "django-pgjobs[" not in errors[0].msg
