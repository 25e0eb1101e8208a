"""Housekeeping any worker or scheduler may run: rescue lost jobs, prune old ones."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction

from . import conf, db, signals
from .models import Job, WorkerProcess
from .states import JobState

logger = logging.getLogger(__name__)


def rescue_orphaned(now: datetime, stale_after: float | None = None) -> int:
    """Return jobs held by dead workers to the queue; delete those workers' rows.

    A worker is dead when its heartbeat is older than ``stale_after`` seconds
    (default ``WORKER_STALE_AFTER``). Safe to run from many processes at once.
    """
    stale_before = now - timedelta(seconds=stale_after or conf.get("WORKER_STALE_AFTER"))
    using = db.alias()
    with transaction.atomic(using=using):
        rescued = db.fetch_jobs("rescue", {"now": now, "stale_before": stale_before}, using)
        gone = WorkerProcess.objects.using(using).filter(heartbeat_at__lt=stale_before).delete()[0]
    for job in rescued:
        logger.warning("rescued job %s (%s) from lost worker %s", job.pk, job.task, job.worker_id)
        signal = signals.job_discarded if job.state == JobState.DISCARDED else signals.job_retrying
        signal.send(sender=Job, job=job, error=None, rescued=True)
    if gone:
        logger.warning("removed %s stale worker row(s)", gone)
    return len(rescued)


def prune_finished(now: datetime, older_than: timedelta, batch_size: int = 1000) -> int:
    """Delete jobs finished more than ``older_than`` ago, one short transaction per batch."""
    using = db.alias()
    total = 0
    while True:
        deleted = db.execute(
            "prune", {"finished_before": now - older_than, "batch_size": batch_size}, using
        )
        total += deleted
        if deleted < batch_size:
            return total
