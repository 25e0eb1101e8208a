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

#: Characters of a record's error and traceback a reader gets from the database: one
#: more than a worker writes (transitions.ERROR_LENGTH, TRACEBACK_LENGTH), so that
#: ``clipped`` marks a longer one as cut. Any other value of a record, a record that is
#: no object, or ``errors`` that is no list: its first OTHER_LENGTH characters, as text
#: if it is no string; and a record's first OTHER_KEYS keys (jsonb orders them shortest
#: first: a worker's five come first).
ERROR_READ = 10_001
TRACEBACK_READ = 50_001
OTHER_LENGTH = 2_000
OTHER_KEYS = 20

_ERRORS = '"pgjobs_job"."errors"'


def _at_most(value: str, length: str | int) -> str:
    """SQL: the jsonb ``value``, a string cut to ``length`` characters, any other value
    over it its text, cut."""
    return (
        f"CASE WHEN jsonb_typeof({value}) = 'string' THEN to_jsonb(left({value} #>> '{{}}', "
        f"{length})) WHEN octet_length({value}::text) > {OTHER_LENGTH} "
        f"THEN to_jsonb(left({value}::text, {OTHER_LENGTH})) ELSE {value} END"
    )


_LENGTH_OF_KEY = (
    f"CASE key WHEN 'error' THEN {ERROR_READ} WHEN 'traceback' THEN {TRACEBACK_READ} "
    f"ELSE {OTHER_LENGTH} END"
)
_RECORD = (
    "CASE WHEN jsonb_typeof(record) = 'object' THEN (SELECT "
    f"coalesce(jsonb_object_agg(left(key, 100), {_at_most('value', _LENGTH_OF_KEY)}), '{{}}') "
    f"FROM (SELECT key, value FROM jsonb_each(record) LIMIT {OTHER_KEYS}) AS each_key) "
    f"ELSE {_at_most('record', OTHER_LENGTH)} END"
)
# The same cut for a row written around that trigger (by hand, or before it existed):
# whatever its length, a reader gets no more than KEPT records from the database, and
# of each no more than a worker writes: a row of three 60 MB records made the API's
# answer take 588 MB.
_KEPT_SQL = (
    f"CASE WHEN jsonb_typeof({_ERRORS}) = 'array' THEN (SELECT "
    f"coalesce(jsonb_agg({_RECORD} ORDER BY position), '[]') FROM jsonb_array_elements("
    f"CASE WHEN jsonb_array_length({_ERRORS}) > {KEPT} "
    f"THEN jsonb_path_query_array({_ERRORS}, '$[0, last - {KEPT - 2} to last]') "
    f"ELSE {_ERRORS} END) WITH ORDINALITY AS records(record, position)) "
    f"ELSE {_at_most(_ERRORS, OTHER_LENGTH)} END"
)
_LEFT_OUT_SQL = (
    f"CASE WHEN jsonb_typeof({_ERRORS}) = 'array' "
    f"THEN greatest(jsonb_array_length({_ERRORS}) - {KEPT}, 0) ELSE 0 END"
)


def bounded(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """``queryset`` with each job's ``errors`` read as at most ``KEPT`` records (the first
    and the latest), and ``errors_not_kept`` counting the others, dropped on write
    (meta.errors_dropped) or left out on read: a row of 50,000 records is no 75 MB page,
    answer or worker read. Meant for jobs that are shown: ``save()`` of one leaves its
    errors as stored (``models.save_read_fields``)."""
    from .models import ReadableJSONField

    return queryset.defer("errors").annotate(
        _kept_errors=RawSQL(_KEPT_SQL, (), output_field=ReadableJSONField()),
        _errors_left_out=RawSQL(_LEFT_OUT_SQL, (), output_field=IntegerField()),
    )


def kept(job: Any) -> Any:
    """A job read through ``bounded``, its ``errors`` and ``errors_not_kept`` set."""
    if hasattr(job, "_kept_errors"):
        from .models import stand_in

        stand_in(job, "errors", job._kept_errors)  # in part: never saved back
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
