"""Scheduler processes: which are running, when each last looked at the schedules,
and how far its host's clock is from the database's (ticks go by the database's)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from ..models import SchedulerProcess
from ..scheduler import MAX_SLEEP
from ..templatetags.pgjobs_admin import clock_skew
from .base import OperatorAdmin
from .workers import heartbeat_age, seen

#: A scheduler looks at the table at least every MAX_SLEEP; twice that is a miss.
STALE_AFTER = 2 * MAX_SLEEP


class SchedulerProcessAdmin(OperatorAdmin):
    list_display = ("id", "host", "pid", "started_at", "last_pass", "clock")
    show_facets = admin.ShowFacets.NEVER
    fields = ("host", "pid", "started_at", "last_pass", "clock")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[SchedulerProcess]:
        return super().get_queryset(request).annotate(heartbeat_age=heartbeat_age())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows are written by the schedulers themselves

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # nothing to edit; deleting a row of a dead scheduler is allowed

    @admin.display(description="last pass", ordering="-heartbeat_at")
    def last_pass(self, scheduler: SchedulerProcess) -> str:
        return seen(scheduler, STALE_AFTER)

    @admin.display(description="host clock", ordering="clock_skew")
    def clock(self, scheduler: SchedulerProcess) -> str:
        return clock_skew(scheduler.clock_skew)
