"""The dashboard page and the JSON it refreshes itself from.

The page is rendered once; ``static/pgjobs/dashboard.js`` then fetches
``data/`` every few seconds and redraws the chart and tables in place, so
nothing is loaded from outside the site (no CDN, no chart library).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.contrib.admin.utils import quote
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.functions import JSONArray
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from .. import conf, limits, liveness, logs, stats
from ..models import Queue, WorkerProcess
from ..templatetags.pgjobs_admin import TIME_FORMAT
from .base import url_or_none

#: How often the page asks for fresh numbers, in milliseconds.
REFRESH_MS = 3000


def dashboard_data(now: datetime | None = None) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-ready values."""
    now = limits.given_now(now) or timezone.now()
    series = stats.throughput(now)
    queues = []
    for queue in stats.queue_depths(now):
        oldest = queue["oldest_available_at"]
        queues.append(
            {
                **{key: queue[key] for key in ("name", "paused", "blocking", "concurrency")},
                "depth": queue["depth"],
                "oldest_available_seconds": _age(now, oldest),
                # The page unquotes it (x_3A was linked as x:); None for a
                # name jobs carry that no URL can (an empty one).
                "url": url_or_none("admin:pgjobs_queue_change", quote(queue["name"])),
            }
        )
    ages = [q["oldest_available_seconds"] for q in queues if q["oldest_available_seconds"]]
    return {
        "generated_at": now.isoformat(),
        # As every time of the admin (TIME_FORMAT): the browser's clock may differ.
        "generated_at_shown": timezone.localtime(now).strftime(TIME_FORMAT),
        "throughput": [
            {
                **point,
                "minute": point["minute"].isoformat(),
                "label": timezone.localtime(point["minute"]).strftime("%H:%M"),
            }
            for point in series
        ],
        # Estimated past stats.PER_SLICE finished jobs per stats.SLICE_SECONDS: the
        # page puts "≈" before an approximate figure, never shown as exact.
        "totals": {
            "completed": sum(point["completed"] for point in series),
            "failed": sum(point["failed"] for point in series),
            "approximate": any(point["approximate"] for point in series),
        },
        "queues": queues,
        "oldest_available_seconds": max(ages, default=None),
        "workers": stats.worker_summary(now),
    }


#: How long a due job waits with no worker alive before the job list and the dashboard
#: say so (a newcomer's first job, enqueued before any runworker, just sat there).
UNATTENDED_AFTER = timedelta(seconds=60)
#: Queues no live worker serves whose jobs are looked at (a list of names in the query).
UNSERVED_LOOKED_AT = 100


def alive_workers(using: str) -> QuerySet[WorkerProcess]:
    """Workers whose heartbeat is fresh, by the database's clock (which stamps it),
    and not from the future (``liveness.alive``)."""
    stale_after = timedelta(seconds=conf.get("WORKER_STALE_AFTER"))
    return WorkerProcess.objects.using(using).filter(liveness.alive(stale_after))


def no_worker_warning(now: datetime | None = None) -> str | None:
    """What the job list and the dashboard say when a due job of an unpaused queue has
    waited over UNATTENDED_AFTER and no worker alive (by its heartbeat) serves its
    queue, none at all or none of that queue; None otherwise. Jobs only run by
    ``POST /jobs/run`` wait too: it says so."""
    now = limits.given_now(now) or timezone.now()  # before any query
    using = conf.get("DATABASE")
    alive = alive_workers(using)
    due = stats.due_jobs(now, using).filter(run_at__lt=now - UNATTENDED_AFTER)
    some_alive = alive.exists()
    if some_alive:
        # Workers whose --queues leave a queue out: its jobs sat there while the
        # workers looked busy. (A worker of every queue reads new queues as they come.)
        serving = alive.filter(queues__contains=JSONArray(OuterRef("name")))
        unserved = Queue.objects.using(using).filter(paused=False).exclude(Exists(serving))
        # Names first, then their jobs through the claim index (led by the queue): as
        # one join it walked every due job of the served queues, 290 ms at 400,000.
        names = list(unserved.values_list("name", flat=True)[:UNSERVED_LOOKED_AT])
        if not names:
            return None
        due = due.filter(queue__in=names).order_by()
    else:
        due = due.exclude(queue__in=Queue.objects.using(using).filter(paused=True).values("name"))
    # One job that waited that long, not the longest: the claim index finds one at
    # once, where the oldest of each queue read all of a backlog of millions. In no
    # order: newest first walked the primary key back through every job when none
    # was found (all due jobs in paused queues: 331 ms at 500,000 jobs).
    waited = due.order_by().values_list("queue", "run_at")[:1]
    if not waited:
        return None
    name, since = waited[0]
    # As the dashboard's tiles say it ("12m 41s", not "761s").
    age = logs.delay((now - since).total_seconds())
    if some_alive:
        return (
            f"No running worker serves queue {name!r}, and a job of it has waited {age}: "
            "the running workers were started with `--queues` that leave it out. Start "
            f"one with `--queues {name}` (or without `--queues`: every queue, those "
            "added later too). See Worker processes."
        )
    return (
        f"No worker is running, and a job of queue {name!r} has waited "
        f"{age}: jobs run only while `python manage.py "
        "runworker` runs (or when `POST /jobs/run` runs them). See Worker processes."
    )


def _age(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


class DashboardViews:
    def __init__(self, model_admin: ModelAdmin) -> None:
        self.model_admin = model_admin

    def page(self, request: HttpRequest) -> HttpResponse:
        if warning := no_worker_warning():
            self.model_admin.message_user(request, warning, messages.WARNING, fail_silently=True)
        admin_site = self.model_admin.admin_site
        context = {
            **admin_site.each_context(request),
            "opts": self.model_admin.opts,
            "title": "Job dashboard",
            "data": dashboard_data(),
            "data_url": reverse("admin:pgjobs_dashboard_data"),
            "refresh_ms": REFRESH_MS,
            "per_slice": stats.PER_SLICE,
            "slice_seconds": stats.SLICE_SECONDS,
        }
        return TemplateResponse(request, "admin/pgjobs/dashboard.html", context)

    def data(self, request: HttpRequest) -> HttpResponse:
        response = JsonResponse(dashboard_data())
        response["Cache-Control"] = "no-store"
        return response
