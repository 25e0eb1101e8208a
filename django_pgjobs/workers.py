"""Operating worker processes from outside: the kill switch."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from . import db, limits
from .models import WorkerProcess

#: Payloads: "stop:<worker id>", "stop:all", "cancel:<job id>".
CONTROL_CHANNEL = "pgjobs_control"


def request_stop(worker_ids: Iterable[int] | None = None) -> int:
    """Ask workers (all when ``worker_ids`` is None) to stop claiming, finish or hand
    back their jobs, and exit. Returns how many worker rows were flagged.

    The flag is the truth (workers see it on their next heartbeat); the
    notification makes running workers react at once. Ids that are not whole
    numbers from 1 up raise InvalidOption, a string included (its characters are
    no ids: ``request_stop("12")`` stopped workers 1 and 2).
    """
    using = db.alias()
    rows = WorkerProcess.objects.using(using).filter(stop_requested=False)
    if worker_ids is not None:
        ids = sorted(set(limits.row_ids(worker_ids, "worker_ids")))
        rows = rows.filter(pk__in=ids)
    with transaction.atomic(using=using):
        flagged = list(rows.values_list("pk", flat=True))
        WorkerProcess.objects.using(using).filter(pk__in=flagged).update(stop_requested=True)
        for worker_id in flagged:
            db.notify(CONTROL_CHANNEL, f"stop:{worker_id}", using)
    return len(flagged)
