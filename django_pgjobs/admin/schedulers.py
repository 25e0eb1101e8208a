"""Scheduler processes: which are running, when each last looked at the schedules,
and how far its host's clock is from the database's (ticks go by the database's)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from ..models import SchedulerProcess
from ..scheduler import STALE_AFTER
from ..templatetags.pgjobs_admin import clock_skew, when
from .base import OperatorAdmin
from .workers import heartbeat_age, seen


class SchedulerProcessAdmin(OperatorAdmin):
    list_display = ("id", "host", "pid", "started", "last_pass", "clock")
    show_facets = admin.ShowFacets.NEVER
    fields = ("host", "pid", "started", "last_pass", "clock")
    readonly_fields = fields

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Django says "Select scheduler process to view": the rows are the schedulers' own.
        extra = {"title": "Scheduler processes", **(extra_context or {})}
        return super().changelist_view(request, extra)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = {"title": "Scheduler process", **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra)

    def get_queryset(self, request: HttpRequest) -> QuerySet[SchedulerProcess]:
        return super().get_queryset(request).annotate(heartbeat_age=heartbeat_age())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows are written by the schedulers themselves

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # nothing to edit; deleting a row of a dead scheduler is allowed

    @admin.display(description="started", ordering="started_at")
    def started(self, scheduler: SchedulerProcess) -> str:
        return when(scheduler.started_at)

    @admin.display(description="last pass", ordering="-heartbeat_at")
    def last_pass(self, scheduler: SchedulerProcess) -> str:
        return seen(scheduler, STALE_AFTER)

    @admin.display(description="host clock", ordering="clock_skew")
    def clock(self, scheduler: SchedulerProcess) -> str:
        return clock_skew(scheduler.clock_skew)
