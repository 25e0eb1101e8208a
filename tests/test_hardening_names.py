"""Task names resolve against the registry only: no entry point imports a module a name points at.

``tests.import_canary`` defines a real ``@task`` but is listed nowhere: before this was
fixed, naming ``tests.import_canary.planted`` in a request, a job row or a schedule
imported the module (running its code in the web process or the worker) and then ran
its task.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.urls import reverse

from django_pgjobs import Job, UnknownTask, tasks
from django_pgjobs.api.tokens import issue
from django_pgjobs.backend import PgJobsBackend
from django_pgjobs.compat import TaskResultDoesNotExist
from django_pgjobs.enqueue import JobSpec
from django_pgjobs.models import Schedule
from django_pgjobs.states import JobState
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

CANARY = "tests.import_canary"
PLANTED = f"{CANARY}.planted"


@pytest.fixture(autouse=True)
def unimported() -> Iterator[None]:
    """The canary module is not imported, and not registered, before and after each test."""
    sys.modules.pop(CANARY, None)
    tasks._registry.pop(PLANTED, None)
    yield
    imported = CANARY in sys.modules
    sys.modules.pop(CANARY, None)
    tasks._registry.pop(PLANTED, None)
    assert not imported, f"{CANARY} was imported because something named {PLANTED}"


def test_the_python_api_refuses_a_task_that_is_not_registered_and_imports_nothing():
    with pytest.raises(UnknownTask, match="TASK_MODULES"):
        Job.enqueue(PLANTED)
    with pytest.raises(UnknownTask):
        Job.enqueue_many([JobSpec(PLANTED)] * 150)  # the COPY path looks tasks up first
    assert not Job.objects.exists()


@pytest.mark.parametrize("name", [PLANTED, "this.x", "json.tool.main", ".", "a..b", "x" * 255])
def test_the_http_api_answers_400_and_imports_nothing(client, name):
    already = set(sys.modules)
    token = issue("ci", ["*"])[1]
    response = client.post(
        reverse("pgjobs:enqueue"),
        json.dumps({"task": name}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    assert "TASK_MODULES" in response.json()["fields"]["task"]
    parts = name.split(".")
    named = {".".join(parts[:end]) for end in range(1, len(parts))}
    assert not (set(sys.modules) - already) & named
    assert not Job.objects.exists()


def test_a_worker_fails_a_job_of_an_unregistered_task_saying_how_to_register_it(worker):
    job = JobFactory(task=PLANTED)
    worker.drain()
    job.refresh_from_db()
    assert job.state == JobState.RETRYABLE  # a worker on newer code may know it
    error = job.errors[-1]
    assert error["exception_class"] == "django_pgjobs.exceptions.UnknownTask"
    assert "@task" in error["error"] and "PGJOBS['TASK_MODULES']" in error["error"]


def test_a_schedule_naming_an_unregistered_task_is_invalid_and_imports_nothing():
    schedule = Schedule(name="planted", cron="* * * * *", task=PLANTED)
    with pytest.raises(ValidationError) as refused:
        schedule.full_clean()
    assert "task" in refused.value.message_dict


@pytest.mark.parametrize("name", [PLANTED, ".", "a..b", "os.path.join"])
def test_the_schedule_admin_form_refuses_it_with_a_message(admin_client, name):
    response = admin_client.post(
        reverse("admin:pgjobs_schedule_add"),
        {"name": "planted", "cron": "* * * * *", "timezone": "UTC", "catch_up": "latest",
         "jitter": "0", "overlap": "allow", "catch_up_limit": "100", "task": name, "args": "[]",
         "kwargs": "{}"},
    )  # fmt: skip
    assert response.status_code == 200
    assert "task" in response.context["adminform"].form.errors
    assert not Schedule.objects.exists()


def test_the_django_tasks_backend_reads_no_result_by_importing_a_path():
    job = JobFactory(task=PLANTED)
    backend = PgJobsBackend("default", {})
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(str(job.pk))


def test_task_modules_are_imported_at_startup_and_then_found():
    with override_settings(PGJOBS={"TASK_MODULES": [CANARY]}):
        tasks.import_task_modules()
    assert tasks.get_task(PLANTED).name == PLANTED
    sys.modules.pop(CANARY)  # imported on purpose here


def test_a_task_name_of_the_wrong_type_is_an_unknown_task():
    for name in (None, 42, ["x"], {"a": 1}):
        with pytest.raises(UnknownTask):
            tasks.get_task(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [["ok", 3], [""], "tests.import_canary", [None]])
def test_a_task_modules_setting_that_is_not_a_list_of_module_paths_fails_the_check(value, settings):
    from django_pgjobs.checks import check_settings

    settings.PGJOBS = {"TASK_MODULES": value}
    assert any("TASK_MODULES" in error.msg for error in check_settings())


def test_a_final_newline_is_no_part_of_a_valid_name():
    """Python's "$" matches before a final newline, PostgreSQL's CHECK does not: a queue
    or connector name "x\\n" passed the checks and hit the constraint (found by
    hypothesis in tests/test_hardening_input.py)."""
    from django_pgjobs.connectors.command import ENV_NAME
    from django_pgjobs.connectors.store import CONNECTOR_NAME
    from django_pgjobs.queues import QUEUE_NAME

    for pattern in (QUEUE_NAME, CONNECTOR_NAME, ENV_NAME):
        assert pattern.match("ok") and not pattern.match("ok\n")
