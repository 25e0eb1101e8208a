"""Queues: their settings, live depth per state, and pausing."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from .. import conf, queues, ratelimits, stats
from ..models import Queue
from ..stats import DEPTH_STATES
from ..templatetags.pgjobs_admin import duration
from .base import CheckedChangeList, OperatorAdmin


class QueueChangeList(CheckedChangeList):
    """Attaches live depths to the page's queues from two grouped queries.

    Not a correlated subquery per queue and state: on a never-analyzed queue table
    the planner guesses hundreds of rows and spends longer compiling the query
    (JIT) than running it.
    """

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        depths = {row["name"]: row for row in stats.queue_depths()}
        self.result_list = list(self.result_list)
        rated = {
            ratelimits.queue_scope(queue.name): queue.rate_period
            for queue in self.result_list
            if queue.rate_limit is not None
        }
        used = ratelimits.in_use(rated, timezone.now(), conf.get("DATABASE")) if rated else {}
        for queue in self.result_list:
            row = depths.get(queue.name, {})
            queue.depth = row.get("depth") or dict.fromkeys(stats.DEPTH_STATES, 0)
            queue.oldest_available_at = row.get("oldest_available_at")
            queue.rate_used = used.get(ratelimits.queue_scope(queue.name), 0)


def _per_key_limits(queue: Queue) -> list[str]:
    """``2 per key at once``, ``10 per key per 1 s``: a queue's per-key limits."""
    lines = []
    if queue.key_concurrency:
        lines.append(f"{queue.key_concurrency:,} per key at once")
    if queue.key_rate_limit:
        lines.append(
            f"{queue.key_rate_limit:,} per key per {ratelimits.period_text(queue.key_rate_period)}"
        )
    return lines


def _depth_column(state: str) -> Any:
    @admin.display(description=state)
    def column(self: QueueAdmin, queue: Queue) -> str:
        value = getattr(queue, "depth", {}).get(state, 0)
        return format_html(
            '<a href="{}?queue={}&state={}" data-pgjobs-depth="{}/{}">{}</a>',
            reverse("admin:pgjobs_job_changelist"),
            queue.name,
            state,
            queue.name,
            state,
            value,
        )

    return column


class QueueAdmin(OperatorAdmin):
    list_display = (
        "name",
        "paused_toggle",
        "blocking",
        "concurrency",
        "limits",
        "priority",
        *(f"depth_{state}_column" for state in DEPTH_STATES),
        "oldest_available",
    )
    show_facets = admin.ShowFacets.NEVER
    actions = ("pause_queues", "resume_queues")
    change_list_template = "admin/pgjobs/queue/change_list.html"
    fieldsets = (
        (None, {"fields": ("name", "paused", "blocking", "concurrency", "priority")}),
        (
            "Retries",
            {"fields": ("max_attempts", "backoff_strategy", "backoff_base", "backoff_max",
                        "backoff_jitter")},
        ),
        (
            "Rate limit",
            {
                "fields": ("rate_limit", "rate_period"),
                "description": "At most rate_limit jobs of the queue start in any window of "
                "rate_period seconds, across all workers; a job over it waits, its attempt "
                "not counted. Changes apply at the next claim.",
            },
        ),
        (
            "Per key",
            {
                "fields": ("key_concurrency", "key_rate_limit", "key_rate_period"),
                "description": "Limits on the jobs of each concurrency_key (a tenant, an "
                "account), across all workers: at most key_concurrency of them executing "
                "at once, at most key_rate_limit starting in any window of key_rate_period "
                "seconds. A key at its limit holds back its own jobs only. Changes apply "
                "at the next claim.",
            },
        ),
    )  # fmt: skip

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return QueueChangeList

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        shown = tuple(super().get_list_display(request))
        if self.has_change_permission(request):
            return shown
        return tuple("paused" if name == "paused_toggle" else name for name in shown)

    def get_readonly_fields(self, request: HttpRequest, obj: Queue | None = None) -> tuple:
        return ("name",) if obj else ()  # jobs refer to queues by name

    @admin.display(description="limits")
    def limits(self, queue: Queue) -> str:
        """The queue's rate limit, how much of it the last period used, and its
        per-key limits."""
        per_key = format_html_join(
            "",
            '<div class="pgjobs-muted">{}</div>',
            [(line,) for line in _per_key_limits(queue)],
        )
        if queue.rate_limit is None:
            return per_key or "—"
        return format_html(
            '{}<div class="pgjobs-muted" data-pgjobs-rate="{}">{} in the last {}</div>{}',
            ratelimits.describe(queue.rate_limit, queue.rate_period),
            queue.name,
            getattr(queue, "rate_used", 0),
            ratelimits.period_text(queue.rate_period),
            per_key,
        )

    @admin.display(description="oldest due job waiting")
    def oldest_available(self, queue: Queue) -> str:
        since = getattr(queue, "oldest_available_at", None)
        if since is None:
            return "—"
        seconds = max(0, int((timezone.now() - since).total_seconds()))
        return format_html('<span data-pgjobs-oldest="{}">{}</span>', queue.name, duration(seconds))

    @admin.display(description="paused", ordering="paused")
    def paused_toggle(self, queue: Queue) -> str:
        """A button that submits the changelist form to the pause/resume view."""
        action = "resume" if queue.paused else "pause"
        return format_html(
            '<span class="pgjobs-{}">{}</span> <button type="submit" class="button" '
            'formaction="{}" name="_toggle" value="{}">{}</button>',
            "paused" if queue.paused else "running",
            "paused" if queue.paused else "running",
            reverse(f"admin:pgjobs_queue_{action}", args=[quote(queue.name)]),
            queue.name,
            action.capitalize(),
        )

    def get_urls(self) -> list[URLPattern]:
        own = [
            path("<pgjobs_object_id:name>/pause/", self.operator_view(self.pause_view, "change"),
                 name="pgjobs_queue_pause"),
            path("<pgjobs_object_id:name>/resume/", self.operator_view(self.resume_view, "change"),
                 name="pgjobs_queue_resume"),
        ]  # fmt: skip
        return own + super().get_urls()

    def pause_view(self, request: HttpRequest, name: str) -> HttpResponse:
        return self._set_paused(request, name, paused=True)

    def resume_view(self, request: HttpRequest, name: str) -> HttpResponse:
        return self._set_paused(request, name, paused=False)

    def _set_paused(self, request: HttpRequest, name: str, *, paused: bool) -> HttpResponse:
        queue = self.get_object(request, unquote(name))
        if queue is None:
            raise Http404(f"no queue {name!r}")
        queues.set_paused([queue.name], paused)
        verb = "paused" if paused else "resumed"
        self.message_user(request, f"Queue {queue.name} {verb}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:pgjobs_queue_changelist"))

    @admin.action(description="Pause selected queues", permissions=["change"])
    def pause_queues(self, request: HttpRequest, queryset: QuerySet[Queue]) -> None:
        changed = queues.set_paused(queryset.values_list("name", flat=True), True)
        self.message_user(request, f"{changed} queue(s) paused.", messages.SUCCESS)

    @admin.action(description="Resume selected queues", permissions=["change"])
    def resume_queues(self, request: HttpRequest, queryset: QuerySet[Queue]) -> None:
        changed = queues.set_paused(queryset.values_list("name", flat=True), False)
        self.message_user(request, f"{changed} queue(s) resumed.", messages.SUCCESS)


# One column per unfinished state, named as list_display expects.
for _state in DEPTH_STATES:
    setattr(QueueAdmin, f"depth_{_state}_column", _depth_column(_state))
