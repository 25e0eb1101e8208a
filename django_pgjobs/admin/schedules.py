"""Cron schedules: when they fire next, on their own clock; enable, disable, run now."""

from __future__ import annotations

import inspect
import zoneinfo
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from .. import conf, health, liveness, schedules, shown
from ..exceptions import UnknownTask
from ..models import Schedule, SchedulerProcess
from ..tasks import get_task
from .base import id_in_url
from .large import LargeValuesAdmin, not_shown_field
from .schedulers import STALE_AFTER

#: Upcoming fire times listed on a schedule's page.
UPCOMING = 5
#: Fired ticks listed on a schedule's page.
RECENT_TICKS = 10
#: How a plain task's variadic parameters are named on its schedule's page.
STARS = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
#: A tick's column that may be large, written by SQL.
TICK_TEXT = ("error",)
#: A schedule's times, on its own clock: the admin's time format with the weekday
#: and the zone (cron fields often name weekdays).
OWN_CLOCK = "%a %Y-%m-%d %H:%M:%S %Z"


def fire_times(schedule: Schedule, now: datetime, count: int = UPCOMING) -> list[datetime]:
    """The next ``count`` fire times after ``now``, on the schedule's own clock."""
    return schedules.fire_times(schedule, now, count)


def plain_parameters(func: Any) -> str:
    """A plain task's parameters, each any JSON: "a: any JSON; b: any JSON (the task is
    not typed)". Saying only "any JSON" left a form's "missing argument 'a'" a riddle."""
    try:
        parameters = inspect.signature(func, follow_wrapped=False).parameters.values()
    except (TypeError, ValueError):  # a callable Python can't tell: its calls aren't checked
        return "any JSON (the task is not typed)"
    names = [STARS.get(parameter.kind, "") + parameter.name for parameter in parameters]
    if not names:
        return "none"
    return "; ".join(f"{name}: any JSON" for name in names) + " (the task is not typed)"


def _local(instant: datetime | None, zone_name: str) -> str:
    if instant is None:
        return "—"
    try:
        zone = zoneinfo.ZoneInfo(zone_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = timezone.get_current_timezone()
    return instant.astimezone(zone).strftime(OWN_CLOCK)


def no_scheduler_warning() -> str | None:
    """What the list says when an enabled schedule is late (as ``pgjobs health`` counts
    it) and no ``runscheduler`` passed within STALE_AFTER; None otherwise. (``--once``
    from cron keeps no row: its schedules are on time, so it is not warned about.)"""
    using, now, lag = conf.get("DATABASE"), timezone.now(), health.DEFAULT_SCHEDULER_LAG
    overdue = health.overdue_schedule(now, lag, using)
    if overdue is None:
        return None
    processes = SchedulerProcess.objects.using(using)
    if processes.filter(liveness.alive(STALE_AFTER)).exists():
        return None  # a scheduler runs: the late schedule is its business, not a setup step
    late = health.lateness(overdue, now, lag)
    return (
        f"No scheduler is running, and {late}: schedules fire only while "
        "`python manage.py runscheduler` runs (or `runscheduler --once` from cron). "
        "See Scheduler processes."
    )


def _tick_class(error: str) -> str:
    """A skipped tick (its overlap policy) is no failure: it is shown quieter."""
    return "pgjobs-skipped" if error.startswith("skipped:") else "pgjobs-error"


class ScheduleAdmin(LargeValuesAdmin):
    large_fields = schedules.JOB_VALUES
    args_not_shown = not_shown_field("args")
    kwargs_not_shown = not_shown_field("kwargs")
    list_display = (
        "name",
        "cron",
        "timezone",
        "task",
        "queue",
        "enabled_toggle",
        "next_fire",
        "overlap",
        "last_fire",
        "run_now_button",
    )
    list_display_links = ("name",)
    search_fields = ("name", "task")
    show_facets = admin.ShowFacets.NEVER
    actions = ("enable_schedules", "disable_schedules", "run_schedules_now")
    readonly_fields = (
        "next_fire_times",
        "last_fire",
        "planned_fire",
        "last_job_link",
        "recent_ticks",
        "task_arguments",
    )
    fieldsets = (
        (None, {"fields": ("name", "enabled", "cron", "timezone", "next_fire_times")}),
        ("Job", {"fields": ("task", "task_arguments", "args", "kwargs", "queue",
                            "priority")}),
        ("Policies", {"fields": ("jitter", "overlap", "catch_up", "catch_up_window",
                                 "catch_up_limit")}),
        ("Ticks", {"fields": ("last_fire", "planned_fire", "last_job_link", "recent_ticks")}),
    )  # fmt: skip

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # A newcomer adds a schedule here, and nothing ever fires: say why.
        if request.method == "GET" and (warning := no_scheduler_warning()):
            self.message_user(request, warning, messages.WARNING, fail_silently=True)
        return super().changelist_view(request, extra_context)

    # -- what is shown ---------------------------------------------------------------------

    @admin.display(description="next fire (its timezone)", ordering="next_fire_at")
    def next_fire(self, schedule: Schedule) -> str:
        if not schedule.enabled:
            return "disabled"
        problem = schedules.plan_problem(schedule)
        if problem:  # it stays due; the scheduler skips it until it is fixed
            return f"can't be planned: {problem}"
        upcoming = schedule.next_fire_at or next(
            iter(fire_times(schedule, timezone.now(), 1)), None
        )
        return _local(upcoming, schedule.timezone)

    @admin.display(description="last fire", ordering="last_fire_at")
    def last_fire(self, schedule: Schedule) -> str:
        return _local(schedule.last_fire_at, schedule.timezone)

    @admin.display(description="next fire (planned by the scheduler)")
    def planned_fire(self, schedule: Schedule) -> str:
        return _local(schedule.next_fire_at, schedule.timezone)

    @admin.display(description="next fire times")
    def next_fire_times(self, schedule: Schedule) -> str:
        if schedule.pk is None:
            return "shown once saved"
        problem = schedules.plan_problem(schedule)
        if problem:
            return f"can't be planned: {problem}"
        times = fire_times(schedule, timezone.now())
        if not times:
            return "—"
        return format_html_join("", "<div>{}</div>", ((t.strftime(OWN_CLOCK),) for t in times))

    @admin.display(description="arguments the task takes")
    def task_arguments(self, schedule: Schedule) -> str:
        """The task's parameters: what each expects of a typed task, their names of a plain
        one (args and kwargs must bind to them, whatever JSON their values are)."""
        try:
            task = get_task(schedule.task)
            signature = task.signature
        except (UnknownTask, NameError, TypeError):
            return "—"
        if signature is None:
            return plain_parameters(task.func)
        return signature.describe() or "none"

    @admin.display(description="last job")
    def last_job_link(self, schedule: Schedule) -> str:
        if schedule.last_job_id is None:
            return "—"
        return format_html(
            '<a href="{}">job #{}</a>',
            reverse("admin:pgjobs_job_change", args=[schedule.last_job_id]),
            schedule.last_job_id,
        )

    @admin.display(description="recent ticks")
    def recent_ticks(self, schedule: Schedule) -> str:
        if schedule.pk is None:
            return "—"
        # A tick's error is read within LISTED_BYTES: one of 100 MB, written by SQL,
        # made this page take 741 MB and send 100 MB.
        ticks = shown.within(schedule.ticks.order_by("-fire_at"), TICK_TEXT, shown.LISTED_BYTES)
        ticks = list(ticks[:RECENT_TICKS])
        if not ticks:
            return "none yet"
        for tick in ticks:
            shown.unpack(tick, TICK_TEXT, shown.LISTED_BYTES)
            tick.error = tick.error if tick.error is not None else tick.not_shown["error"]
        return format_html_join(
            "",
            "<div>{} → {}</div>",
            (
                (
                    _local(tick.fire_at, schedule.timezone),
                    format_html('<a href="{}">job #{}</a>',
                                reverse("admin:pgjobs_job_change", args=[tick.job_id]),
                                tick.job_id)
                    if tick.job_id else format_html("<span class=\"{}\">{}</span>",
                                                    _tick_class(tick.error),
                                                    tick.error or "no job"),
                )
                for tick in ticks
            ),
        )  # fmt: skip

    @admin.display(description="enabled", ordering="enabled")
    def enabled_toggle(self, schedule: Schedule) -> str:
        action = "disable" if schedule.enabled else "enable"
        return format_html(
            '<span class="pgjobs-{}">{}</span> <button type="submit" class="button" '
            'formaction="{}">{}</button>',
            "running" if schedule.enabled else "paused",
            "enabled" if schedule.enabled else "disabled",
            reverse(f"admin:pgjobs_schedule_{action}", args=[schedule.pk]),
            action.capitalize(),
        )

    @admin.display(description="run now")
    def run_now_button(self, schedule: Schedule) -> str:
        return format_html(
            '<button type="submit" class="button" formaction="{}">Run now</button>',
            reverse("admin:pgjobs_schedule_run_now", args=[schedule.pk]),
        )

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        shown = tuple(super().get_list_display(request))
        if self.has_change_permission(request):
            return shown
        hidden = {"run_now_button"}
        swapped = {"enabled_toggle": "enabled"}
        return tuple(swapped.get(name, name) for name in shown if name not in hidden)

    # -- operator actions --------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        own = [
            # str, read by id_in_url: int read "01" as schedule 1.
            path("<str:schedule_id>/enable/", self.operator_view(self.enable_view, "change"),
                 name="pgjobs_schedule_enable"),
            path("<str:schedule_id>/disable/", self.operator_view(self.disable_view, "change"),
                 name="pgjobs_schedule_disable"),
            path("<str:schedule_id>/run-now/", self.operator_view(self.run_now_view, "change"),
                 name="pgjobs_schedule_run_now"),
        ]  # fmt: skip
        return own + super().get_urls()

    def enable_view(self, request: HttpRequest, schedule_id: str) -> HttpResponse:
        return self._set_enabled(request, schedule_id, enabled=True)

    def disable_view(self, request: HttpRequest, schedule_id: str) -> HttpResponse:
        return self._set_enabled(request, schedule_id, enabled=False)

    def _set_enabled(
        self, request: HttpRequest, schedule_id: str, *, enabled: bool
    ) -> HttpResponse:
        schedule = get_object_or_404(
            Schedule.objects.only("pk", "name"), pk=id_in_url(schedule_id, "schedule")
        )
        schedules.set_enabled([schedule.pk], enabled)
        verb = "enabled" if enabled else "disabled"
        self.message_user(request, f"Schedule {schedule.name} {verb}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:pgjobs_schedule_changelist"))

    def run_now_view(self, request: HttpRequest, schedule_id: str) -> HttpResponse:
        schedule = get_object_or_404(
            Schedule.objects.only("pk", "name"), pk=id_in_url(schedule_id, "schedule")
        )
        self._run_now(request, [schedule])
        return HttpResponseRedirect(reverse("admin:pgjobs_schedule_changelist"))

    def _run_now(self, request: HttpRequest, chosen: Any) -> None:
        for schedule in chosen:
            try:
                job = schedules.run_now(schedule)
            except schedules.NotRun as refused:  # its overlap policy: not an error
                self.message_user(request, f"Schedule {schedule.name}: {refused}",
                                  messages.WARNING)  # fmt: skip
                continue
            except Exception as error:  # the task or queue is gone: say which, go on
                self.message_user(request, f"Schedule {schedule.name}: nothing enqueued: "
                                  f"{type(error).__name__}: {error}", messages.ERROR)  # fmt: skip
                continue
            url = reverse("admin:pgjobs_job_change", args=[job.pk])
            self.message_user(
                request,
                format_html('Schedule {} enqueued <a href="{}">job #{}</a>.', schedule.name,
                            url, job.pk),
                messages.SUCCESS,
            )  # fmt: skip

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        changed = schedules.set_enabled(queryset.values_list("pk", flat=True), True)
        self.message_user(request, f"{changed} schedule(s) enabled.", messages.SUCCESS)

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        changed = schedules.set_enabled(queryset.values_list("pk", flat=True), False)
        self.message_user(request, f"{changed} schedule(s) disabled.", messages.SUCCESS)

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_schedules_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._run_now(request, queryset)
