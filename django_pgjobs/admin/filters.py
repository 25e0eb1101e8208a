"""Changelist filters for jobs that stay cheap on millions of rows.

Choices come from small sources (the state enum, the queue table, the task
registry, whether a connector exists) rather than from ``SELECT DISTINCT`` over the job table.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import QuerySet
from django.http import HttpRequest

from .. import conf
from ..connectors.tasks import call as connector_call
from ..models import Connector, Job, Queue
from ..states import JobState
from ..tasks import registered_tasks


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(JobState.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        if value is None:
            return queryset
        if value not in JobState.values:
            raise IncorrectLookupParameters(f"unknown job state {value!r}")
        return queryset.filter(state=value)


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        stored = Queue.objects.using(conf.get("DATABASE")).values_list("name", flat=True)
        names = sorted({*conf.get("QUEUES"), *stored})
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        return queryset if value is None else queryset.filter(queue=value)


class TaskFilter(admin.SimpleListFilter):
    """Tasks registered in this process; ``?task=`` also takes names no longer registered.

    The connectors' built-in task is how a connector is called without a task of one's
    own, not a task of the project: it comes last, as "connector calls", and only once
    a connector exists (or it is the filter in use)."""

    title = "task"
    parameter_name = "task"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = sorted(set(registered_tasks()) - {connector_call.name})
        current = self.value()
        if current and current not in names and current != connector_call.name:
            names.append(current)
        choices = [(name, name) for name in names]
        if current == connector_call.name or _any_connector():
            choices.append((connector_call.name, "connector calls"))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        return queryset if value is None else queryset.filter(task=value)


def _any_connector() -> bool:
    return Connector.objects.using(conf.get("DATABASE")).exists()


class SnoozedFilter(admin.SimpleListFilter):
    """Jobs a snooze put back (``meta["snoozed"]``: the task's ``Snooze``, a busy or
    throttled connector, a connector's rate limit): waiting now, or ever."""

    title = "snoozed"
    parameter_name = "snoozed"
    WAITING = (JobState.SCHEDULED, JobState.AVAILABLE)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("waiting", "waiting after a snooze"), ("ever", "snoozed at least once")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        if value is None:
            return queryset
        if value not in ("waiting", "ever"):
            raise IncorrectLookupParameters(f"unknown snoozed choice {value!r}")
        snoozed = queryset.filter(meta__has_key="snoozed")
        return snoozed.filter(state__in=self.WAITING) if value == "waiting" else snoozed
