"""Operator actions on worker processes, shared by the admin and ``manage.py stopworker``."""

from __future__ import annotations

from collections.abc import Iterable

from . import conf
from .models import WorkerProcess


def request_stop(worker_ids: Iterable[int], using: str | None = None) -> int:
    """Ask workers to stop; returns how many rows were flagged.

    The flag is the kill switch: each worker's heartbeat thread reads it and
    shuts its worker down gracefully (running jobs finish or are handed back).
    """
    ids = [int(pk) for pk in worker_ids]
    rows = WorkerProcess.objects.using(using or conf.get("DATABASE")).filter(pk__in=ids)
    return rows.update(stop_requested=True)
