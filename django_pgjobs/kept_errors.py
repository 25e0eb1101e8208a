"""How many error records a job keeps, and reading jobs with no more than that many."""

from __future__ import annotations

from typing import Any

from django.db.models import IntegerField, QuerySet
from django.db.models.expressions import RawSQL

from . import limits

#: Error records a job keeps: the first and the latest ``KEPT - 1``; meta.errors_dropped
#: counts those dropped between them. The trigger of migration 0018
#: (migrations/sql/0018_bounded_errors.sql) holds every write to this.
KEPT = 20

_ERRORS = '"pgjobs_job"."errors"'
# The same cut for a row written around that trigger (by hand, or before it existed):
# whatever its length, a reader gets no more than KEPT records from the database.
_KEPT_SQL = (
    f"CASE WHEN jsonb_typeof({_ERRORS}) = 'array' AND jsonb_array_length({_ERRORS}) > {KEPT} "
    f"THEN jsonb_path_query_array({_ERRORS}, '$[0, last - {KEPT - 2} to last]') "
    f"ELSE {_ERRORS} END"
)
_LEFT_OUT_SQL = (
    f"CASE WHEN jsonb_typeof({_ERRORS}) = 'array' "
    f"THEN greatest(jsonb_array_length({_ERRORS}) - {KEPT}, 0) ELSE 0 END"
)


def bounded(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """``queryset`` with each job's ``errors`` read as at most ``KEPT`` records (the first
    and the latest), and ``errors_not_kept`` counting the others, dropped on write
    (meta.errors_dropped) or left out on read: a row of 50,000 records is no 75 MB page,
    answer or worker read. Only for jobs that are shown, never saved back."""
    from .models import ReadableJSONField

    return queryset.defer("errors").annotate(
        _kept_errors=RawSQL(_KEPT_SQL, (), output_field=ReadableJSONField()),
        _errors_left_out=RawSQL(_LEFT_OUT_SQL, (), output_field=IntegerField()),
    )


def kept(job: Any) -> Any:
    """A job read through ``bounded``, its ``errors`` and ``errors_not_kept`` set."""
    if hasattr(job, "_kept_errors"):
        job.errors = job._kept_errors
        job.errors_not_kept = job._errors_left_out + dropped(job)
    return job


def dropped(job: Any) -> int:
    """How many error records the database dropped from ``job`` (meta.errors_dropped);
    0 for a meta written by hand that says nothing readable."""
    meta = job.meta if isinstance(job.meta, dict) else {}
    count = meta.get("errors_dropped")
    if isinstance(count, bool) or not isinstance(count, int | float) or count != count:
        return 0
    return int(max(0, min(count, 10**15)))


def not_kept(job: Any) -> int:
    """How many of the job's error records ``errors`` leaves out: dropped by the database
    (meta.errors_dropped), or past ``KEPT`` in a row written by hand and not read
    through ``bounded``."""
    counted = getattr(job, "errors_not_kept", None)
    if counted is not None:
        return counted
    errors = job.errors
    past = len(errors) - KEPT if isinstance(errors, list) else 0
    return dropped(job) + max(past, 0)


def clipped(value: Any, width: int) -> str:
    """A record's text (its error, its traceback) clipped to ``width``, as a worker
    clips what it writes: a row written by hand may hold megabytes. Not text: shown."""
    if isinstance(value, str):
        return limits.shortened(value, width)
    return limits.shown(value, 2_000)
