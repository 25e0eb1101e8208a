"""A backend for Django's Tasks framework that stores and runs Tasks as pgjobs jobs.

    TASKS = {"default": {"BACKEND": "django_pgjobs.backend.PgJobsBackend"}}

``enqueue`` writes a Job in the caller's transaction; ``manage.py runworker``
runs it; ``get_result`` reads the Job back as a TaskResult. Works with
``django.tasks`` (Django 6+) and with the ``django-tasks`` backport (Django 5.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import bridge, conf, limits, sending, shown
from .compat import (
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    task_enqueued,
)
from .exceptions import InvalidOption, InvalidQueueName
from .queues import validate_name


@dataclass(frozen=True, slots=True, kw_only=True)
class PgJobsTask(Task):
    """Django's Task with the pgjobs options a job can have.

    Set them with ``@task(max_attempts=3, timeout=60)`` (Django 6.1+ and the
    backport pass extra decorator arguments through) or, on any version, with
    ``.using(max_attempts=3)``. Unset options fall back as for every pgjobs
    job: to the queue's defaults, then to the PGJOBS setting.
    """

    max_attempts: int | None = None
    timeout: float | None = None
    unique_key: str | None = None

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | None = None,
        backend: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        unique_key: str | None = None,
    ) -> PgJobsTask:
        changed = Task.using(
            self, priority=priority, queue_name=queue_name, run_after=run_after, backend=backend
        )
        ours = {"max_attempts": max_attempts, "timeout": timeout, "unique_key": unique_key}
        ours = {name: value for name, value in ours.items() if value is not None}
        return replace(changed, **ours) if ours else changed


class PgJobsBackend(BaseTaskBackend):
    task_class = PgJobsTask

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        # Without a QUEUES list every pgjobs queue is allowed; whether the queue
        # exists is checked at enqueue, against PGJOBS["QUEUES"] and the table.
        if "QUEUES" not in params:
            self.queues = set()

    def validate_task(self, task: Task) -> None:
        self._require_app()  # run by @task itself, and again by enqueue
        _validate_types(task)
        super().validate_task(task)
        try:
            validate_name(task.queue_name)
        except InvalidQueueName as error:
            raise InvalidTask(str(error)) from None
        _validate_options(task)
        try:
            bridge.register(task)
        except InvalidOption as error:  # a path no job can hold: NUL, over 255 characters
            raise InvalidTask(str(error)) from None

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        from .models import Job

        self.validate_task(task)
        job = Job.enqueue(
            task.module_path,
            args=list(args),
            kwargs=dict(kwargs),
            queue=task.queue_name,
            priority=bridge.to_pgjobs_priority(task.priority),
            run_at=task.run_after,
            max_attempts=getattr(task, "max_attempts", None),
            timeout=getattr(task, "timeout", None),
            unique_key=getattr(task, "unique_key", None),
        )
        # A unique_key already held by an active job returns that job, as Job.enqueue
        # does, read as get_result reads it (its values within the limit: Job.enqueue
        # left its large ones deferred); nothing new was enqueued, so no signal.
        duplicate = getattr(job, "is_duplicate", False)
        result = bridge.result_from_job(
            shown.read_again(job) if duplicate else job, task, self.alias
        )
        if not duplicate:
            sending.send(task_enqueued, "task_enqueued", job, type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        self._require_app()
        from .models import Job

        # The id exactly as result.id gives it: int() also read " 1 ", "1_0", "\uff11"
        # and 1.5, so ids that are none named some other job.
        if not _is_job_id(result_id):
            said = limits.shown(result_id)
            raise TaskResultDoesNotExist(f"{said} is not a pgjobs job id") from None
        pk = int(result_id)
        # Its first and latest error records only, however many its row holds, and its
        # values as the API shows them: a row written by SQL may hold 255 MB in each.
        jobs = shown.bounded(Job.objects.using(conf.get("DATABASE")))
        job = shown.read(jobs.filter(pk=pk).first())
        if job is None:
            raise TaskResultDoesNotExist(f"there is no job {pk}")
        django_task = bridge.django_task_named(job.task)
        if django_task is None:
            raise TaskResultDoesNotExist(
                f"job {pk} runs {job.task!r}, which is not a Django Task of this backend"
            )
        return bridge.result_from_job(job, django_task, self.alias)

    def _not_installed(self) -> str:
        return f"TASKS[{self.alias!r}] uses PgJobsBackend but django_pgjobs is not installed"

    def _require_app(self) -> None:
        """Say what to fix when the app is missing: the check that says so (E101) runs
        only if something imported django.tasks at startup, which nothing does in a
        project without the app, and ``@task`` then failed deep in Django with "Model
        class django_pgjobs.models.Queue doesn't declare an explicit app_label". (Before
        the app registry has its app configs, nothing can be said yet.)"""
        if apps.apps_ready and not apps.is_installed("django_pgjobs"):
            raise ImproperlyConfigured(
                f"{self._not_installed()}: add 'django_pgjobs' to INSTALLED_APPS, then run "
                "`python manage.py migrate`."
            )

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors: list[checks.CheckMessage] = []
        if not apps.is_installed("django_pgjobs"):
            errors.append(
                checks.Error(
                    f"{self._not_installed()}.",
                    hint="Add 'django_pgjobs' to INSTALLED_APPS.",
                    id="pgjobs.E101",
                )
            )
        for name in sorted(self.queues):
            try:
                validate_name(name)
            except InvalidQueueName as error:
                errors.append(checks.Error(f"TASKS[{self.alias!r}]: {error}", id="pgjobs.E102"))
        return errors


def _is_job_id(result_id: Any) -> bool:
    """Whether ``result_id`` is a job's id as TaskResult.id holds it (``limits.id_in_text``),
    or as ``job.pk`` (an int)."""
    if isinstance(result_id, int) and not isinstance(result_id, bool):
        return 1 <= result_id <= limits.MAX_ID
    return limits.id_in_text(result_id) is not None


def _validate_types(task: Task) -> None:
    """Refuse, as InvalidTask, a priority or run_after of a type Django's own checks take
    for granted: ``run_after="2020"`` (or a date) was an AttributeError ("'str' object
    has no attribute 'utcoffset'"), ``priority="5"`` a TypeError, ``priority=nan`` a
    ValueError, from inside Django. Their values are checked after, by Django's rules
    and ``_validate_options``."""
    priority = task.priority  # a bool is an int: Django takes True as 1
    if not (isinstance(priority, int) or (isinstance(priority, float) and math.isfinite(priority))):
        raise InvalidTask(
            f"priority must be a whole number between {TASK_MIN_PRIORITY} and "
            f"{TASK_MAX_PRIORITY}, not {limits.shown(priority)}"
        )
    if task.run_after is not None and not isinstance(task.run_after, datetime):
        try:
            limits.moment(task.run_after, "run_after")
        except InvalidOption as error:
            raise InvalidTask(str(error)) from None


def _validate_options(task: Task) -> None:
    """Refuse pgjobs options a job can't have, when the task is defined or copied: the
    rules of ``Job.enqueue`` (``limits``), said as Django's InvalidTask."""
    checks: dict[str, Callable[[Any, str], Any]] = {
        "max_attempts": limits.max_attempts,
        "timeout": limits.timeout,
        "unique_key": limits.text,
        # Django checks only that it is aware (with USE_TZ): years 1 and 9999 failed
        # later, at enqueue, with pgjobs' InvalidOption instead of Django's InvalidTask.
        # Naive with USE_TZ off, as Django takes it: in TIME_ZONE, as enqueue reads it.
        "run_after": limits.stored_moment,
    }
    for option, check in checks.items():
        value = getattr(task, option, None)
        if value is not None:
            try:
                check(value, option)
            except InvalidOption as error:
                raise InvalidTask(str(error)) from None
