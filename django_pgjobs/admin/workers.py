"""Worker processes: who is alive, what each holds, how far its clock is off, and
the kill switch."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce, Now
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from .. import conf, failing, logs, workers
from ..models import Job, SchedulerProcess, WorkerProcess
from ..payload import names_in
from ..states import JobState
from ..templatetags.pgjobs_admin import clock_skew, duration, when
from .base import id_in_url
from .large import LargeValuesAdmin

#: Entries of a worker's ``failing`` its row of the list says, and its page says.
FAILING_LISTED = 2
FAILING_SHOWN = 20


def heartbeat_age() -> ExpressionWrapper:
    """A process row's heartbeat age, by the database's clock, which stamps heartbeats
    (this web host's clock may be off: its skew would show as age)."""
    return ExpressionWrapper(Now() - F("heartbeat_at"), output_field=DurationField())


def seen(process: WorkerProcess | SchedulerProcess, stale_after: timedelta) -> str:
    """How long ago ``process`` (annotated with ``heartbeat_age``) checked in; stale
    past ``stale_after``, or as far ahead (written by SQL)."""
    age = getattr(process, "heartbeat_age", None) or timedelta(0)
    if age < -stale_after:  # ahead of the database's clock: no live process's (liveness.alive)
        return format_html(
            '<span class="pgjobs-stale">{} ahead (stale)</span>', duration(-age.total_seconds())
        )
    seconds = max(0, int(age.total_seconds()))
    stale = age > stale_after
    return format_html(
        '<span class="pgjobs-{}">{} ago{}</span>',
        "stale" if stale else "live",
        duration(seconds),
        " (stale)" if stale else "",
    )


class WorkerProcessAdmin(LargeValuesAdmin):
    large_fields = listed_fields = ("queues", "failing")
    list_display = (
        "id",
        "host",
        "pid",
        "queue_names",
        "concurrency",
        "started",
        "heartbeat",
        "clock",
        "failing_now",
        "held_jobs",
        "stop_button",
    )
    show_facets = admin.ShowFacets.NEVER
    actions = ("stop_workers",)
    change_form_template = "admin/pgjobs/workerprocess/change_form.html"
    fields = (
        "host",
        "pid",
        "queue_names",
        "concurrency",
        "started",
        "heartbeat",
        "clock",
        "failing_list",
        "stop_requested",
        "held_job_list",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkerProcess]:
        # A subquery per row reads the pgjobs_job_executing index; a JOIN would scan all jobs.
        held = (
            Job.objects.filter(worker=OuterRef("pk"), state=JobState.EXECUTING)
            .order_by()
            .values("worker")
            .annotate(n=Count("*"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(held=Coalesce(Subquery(held, output_field=IntegerField()), Value(0)))
            .annotate(heartbeat_age=heartbeat_age())
        )

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        shown = tuple(super().get_list_display(request))
        if self.has_change_permission(request):
            return shown
        return tuple("stop_requested" if name == "stop_button" else name for name in shown)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows are written by the workers themselves

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Django says "Select worker process to change"; only the Stop button changes one.
        extra = {"title": "Worker processes", **(extra_context or {})}
        return super().changelist_view(request, extra)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # The page is read-only: a POST saved the row back as read, over the worker's
        # own writes since (a newer heartbeat, a stop asked for meanwhile). Stop has
        # its own URL.
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET"])
        extra = {
            # Django says "Change worker process": the row is the worker's to write.
            "title": "Worker process",
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "can_stop": self.has_change_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra)

    @admin.display(description="queues")
    def queue_names(self, worker: WorkerProcess) -> str:
        # The page's row was read within shown.limit(), the list's within LISTED_BYTES.
        too_large = self.listed(worker)
        if "queues" in too_large:
            return too_large["queues"]
        return ", ".join(names_in(worker.queues)) or "all"

    @admin.display(description="started", ordering="started_at")
    def started(self, worker: WorkerProcess) -> str:
        return when(worker.started_at)

    @admin.display(description="last heartbeat", ordering="-heartbeat_at")
    def heartbeat(self, worker: WorkerProcess) -> str:
        return seen(worker, timedelta(seconds=conf.get("WORKER_STALE_AFTER")))

    @admin.display(description="host clock", ordering="clock_skew")
    def clock(self, worker: WorkerProcess) -> str:
        return clock_skew(worker.clock_skew)

    @admin.display(description="failing")
    def failing_now(self, worker: WorkerProcess) -> str:
        return self._failing(worker, FAILING_LISTED)

    @admin.display(description="failing")
    def failing_list(self, worker: WorkerProcess) -> str:
        return self._failing(worker, FAILING_SHOWN)

    def _failing(self, worker: WorkerProcess, most: int) -> str:
        """What of the worker keeps failing, as its last heartbeat wrote it (its loop's
        passes, a queue's claims: since when, how many failures, the error's class),
        the first ``most`` entries; whatever the row holds (``failing.read``)."""
        too_large = self.listed(worker)
        if "failing" in too_large:
            return too_large["failing"]
        entries = failing.read(worker.failing)
        if not entries:
            return "-"
        lines = [failing.said(entry) for entry in entries.entries[:most]]
        left = len(entries.entries) - most + entries.more
        if left > 0:
            lines.append(f"and {left} more")
        return format_html_join(
            "", '<div class="pgjobs-stale">{}</div>', ((line,) for line in lines)
        )

    @admin.display(description="jobs held", ordering="held")
    def held_jobs(self, worker: WorkerProcess) -> str:
        count = getattr(worker, "held", 0)
        url = reverse("admin:pgjobs_job_changelist")
        return format_html('<a href="{}?worker={}&state=executing">{}</a>', url, worker.pk, count)

    @admin.display(description="jobs held")
    def held_job_list(self, worker: WorkerProcess) -> str:
        # What the list shows, not the rows: 100 jobs of 900 kB arguments took 180 MB.
        held = Job.objects.filter(worker=worker, state=JobState.EXECUTING).order_by("pk")
        jobs = held.only("pk", "task", "attempt", "attempted_at")[:100]
        if not jobs:
            return "none"
        return format_html_join(
            "",
            '<div><a href="{}">#{} {}</a> (attempt {}, since {})</div>',
            (
                (reverse("admin:pgjobs_job_change", args=[j.pk]), j.pk, j.task, j.attempt,
                 when(j.attempted_at))
                for j in jobs
            ),
        )  # fmt: skip

    @admin.display(description="stop")
    def stop_button(self, worker: WorkerProcess) -> str:
        if worker.stop_requested:
            return "stopping…"
        return format_html(
            '<button type="submit" class="button" formaction="{}">Stop</button>',
            reverse("admin:pgjobs_workerprocess_stop", args=[worker.pk]),
        )

    def get_urls(self) -> list[URLPattern]:
        own = [
            # str, read by id_in_url: int read "01" as worker 1.
            path("<str:worker_id>/stop/", self.operator_view(self.stop_view, "change"),
                 name="pgjobs_workerprocess_stop"),
        ]  # fmt: skip
        return own + super().get_urls()

    def stop_view(self, request: HttpRequest, worker_id: str) -> HttpResponse:
        worker = get_object_or_404(
            WorkerProcess.objects.only("pk", "host", "pid"), pk=id_in_url(worker_id, "worker")
        )
        workers.request_stop([worker.pk])
        self.message_user(
            request,
            f"Worker {worker.pk} ({worker.host}:{worker.pid}) asked to stop: it {_stops()}.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:pgjobs_workerprocess_changelist"))

    @admin.action(description="Stop selected workers", permissions=["change"])
    def stop_workers(self, request: HttpRequest, queryset: QuerySet[WorkerProcess]) -> None:
        stopped = workers.request_stop(queryset.values_list("pk", flat=True))
        self.message_user(
            request, f"Asked {stopped} worker(s) to stop: each {_stops()}.", messages.SUCCESS
        )


def _stops() -> str:
    """What a worker asked to stop does. Not "at its next heartbeat", as this said: it
    hears at once (its notification; at its heartbeat if it missed that), then stops as
    on SIGTERM, as stopworker says."""
    wait = logs.delay(conf.get("SHUTDOWN_TIMEOUT"))
    return (
        "stops claiming now, and stops once its running jobs finish, or hands them back "
        f"after {wait} (SHUTDOWN_TIMEOUT)"
    )
