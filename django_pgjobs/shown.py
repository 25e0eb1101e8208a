"""What the HTTP API and the admin show of a job's JSON values: each at most
``limit()`` bytes of JSON text, read that way from the database.

Enqueue and workers write no value over ``MAX_PAYLOAD_BYTES`` of compact JSON, but a
row written any other way (SQL, an older version, a bug) may hold up to jsonb's
255 MB in each column: a 100 MB result made ``GET /jobs/<id>`` take 455 MB of memory
and its admin page 741 MB, and a small value nested deep grew a hundredfold when
indented. So the database says how large each value is, and sends it only within the
limit; a value over it is left out and named, with why, in ``job.not_shown``.

``within`` and ``unpack`` do the same for any model's JSON or text columns: the
scheduler reads schedules' args and kwargs so, a job its connector's config and
secrets, and the admin schedules, connectors and worker processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import BigIntegerField, BooleanField, JSONField, QuerySet
from django.db.models.expressions import RawSQL

from . import conf, kept_errors

#: The job's JSON columns the API and the admin show (``errors``: ``kept_errors``).
FIELDS = ("args", "kwargs", "result", "meta")


def limit() -> int:
    """Most bytes of JSON text (as PostgreSQL writes it, in UTF-8) shown of one value:
    twice ``MAX_PAYLOAD_BYTES``, so that whatever enqueue and workers write (compact
    JSON, which PostgreSQL's text spaces out by at most half again) is shown whole."""
    return 2 * conf.get("MAX_PAYLOAD_BYTES")


def bounded(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """``queryset`` with each job's args, kwargs, result and meta read only if within
    ``limit()``, and its errors as ``kept_errors.bounded`` reads them; ``read`` each job
    it gives. Meant for jobs that are shown: ``save()`` of one writes none of the
    values it did not read whole (``models.save_read_fields``)."""
    return kept_errors.bounded(within(queryset, FIELDS))


def read(job: Any) -> Any:
    """A job read through ``bounded`` (or None): its JSON values set, those over the
    limit to None and named in ``job.not_shown`` with why; its errors kept."""
    if job is None or not hasattr(job, "_bytes_args"):
        return kept_errors.kept(job)
    from .models import stand_in

    unpack(job, FIELDS)
    if job.meta is None:  # what readers of meta (kept errors, the timeline) take for "nothing"
        stand_in(job, "meta", {})
    return kept_errors.kept(job)


def read_again(job: Any) -> Any:
    """``job`` read again as an answer shows a job (``bounded``): a duplicate's holder
    as ``Job.enqueue`` returned it (its large values left deferred, ``loaded.holder``),
    for ``POST /jobs`` and the Django Tasks backend. If it is gone since (deleted,
    pruned), ``job`` as it is, the values it left deferred none and named in
    ``not_shown``: read now, they would raise DoesNotExist."""
    from .models import Job, stand_in

    jobs = bounded(Job.objects.using(job._state.db or conf.get("DATABASE")))
    found = read(jobs.filter(pk=job.pk).first())
    if found is not None:
        return found
    job.not_shown = dict(getattr(job, "not_shown", {}))
    for name in job.get_deferred_fields() & set(_NONE):
        stand_in(job, name, _NONE[name]())  # never saved: the job is gone
        if name in FIELDS:
            job.not_shown[name] = "not shown: the job is gone since"
    return job


#: What a value not read stands for in a job shown (``read_again``).
_NONE = {"args": list, "kwargs": dict, "meta": dict, "errors": list, "result": lambda: None}


#: A value stored in over this many times ``most`` bytes is over ``most`` as text, and
#: is not converted to text to measure it: jsonb's stored form is at most about 4
#: times its text (an array of zeros; 18 bytes for a lone ``0``), text's its text and
#: a header, and compression only makes either smaller. Measuring a worker row's 100 MB
#: of queues converted them to text twice, about 1 s each, for nothing shown.
FAR_OVER = 8


def within(
    queryset: QuerySet[Any], fields: Iterable[str], most: int | None = None
) -> QuerySet[Any]:
    """``queryset`` with each of ``fields`` (JSON or text columns of its model) read only
    if its text is within ``most`` bytes (default ``limit()``): the database says each
    value's size and sends it only within the limit. Schedules, connectors and worker
    processes are read so too, by the scheduler, the connectors and the admin: any
    row may have been written by SQL. ``unpack`` each row it gives, before anything
    reads those fields (a deferred field loads whole).

    A value stored in over ``FAR_OVER`` times ``most`` bytes is over without being
    converted to text: its size is said as stored, negative (``unpack`` knows)."""
    model, fields = queryset.model, tuple(fields)
    most = limit() if most is None else most
    annotations = {}
    for name in fields:
        field = model._meta.get_field(name)
        column = f'"{model._meta.db_table}"."{field.column}"'
        far_over = f"pg_column_size({column}) > %s"
        annotations[f"_shown_{name}"] = RawSQL(
            f"CASE WHEN {far_over} THEN NULL "
            f"WHEN octet_length({column}::text) <= %s THEN {column} END",
            (FAR_OVER * most, most),
            output_field=field.clone(),
        )
        annotations[f"_bytes_{name}"] = RawSQL(
            f"CASE WHEN {far_over} THEN -pg_column_size({column}) "
            f"ELSE octet_length({column}::text) END",
            (FAR_OVER * most,),
            output_field=BigIntegerField(),
        )
    return queryset.defer(*fields).annotate(**annotations)


def unpack(
    row: Any, fields: Iterable[str], most: int | None = None, verb: str = "shown"
) -> dict[str, str]:
    """Set ``fields`` of a row read through ``within`` (the same ``most``): each value
    within the limit, None for those over it, which are named with why in
    ``row.not_shown`` (and returned). A model's ``save()`` writes no field named there
    (``models.save_read_fields``)."""
    from .models import read_whole, stand_in

    most = limit() if most is None else most
    not_shown: dict[str, str] = {}
    for name in fields:  # each set before anything reads it: a deferred one loads whole
        size = getattr(row, f"_bytes_{name}")
        if size is not None and (size < 0 or size > most):  # < 0: far over, as stored
            kind = "JSON" if isinstance(row._meta.get_field(name), JSONField) else "text"
            not_shown[name] = too_large(abs(size), most, verb, kind, stored=size < 0)
            stand_in(row, name, None)  # never saved over the stored value
        else:
            setattr(row, name, getattr(row, f"_shown_{name}"))
            read_whole(row, name)
    row.not_shown = not_shown
    return not_shown


def too_large(
    size: int, most: int, verb: str = "shown", kind: str = "JSON", stored: bool = False
) -> str:
    """Why a value is not shown: ``size`` bytes of its text, or, ``stored``, the bytes
    it is stored in (it was far over, and not converted to text to measure it)."""
    why = " (twice PGJOBS['MAX_PAYLOAD_BYTES'])" if most == limit() else ""
    is_ = f"{size:,} bytes as stored, far over" if stored else f"{size:,} bytes, over"
    return f"not {verb}: its {kind} is {is_} the {most:,} {verb}{why}"


#: Most bytes the job list reads of a job's args, kwargs and meta, stored and as JSON
#: text: it shows 40 characters of the arguments and a snooze count.
LISTED_BYTES = 10_000
_LISTED = ("args", "kwargs", "meta")


def listed(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """``queryset`` with args, kwargs and meta read only within ``LISTED_BYTES`` each:
    a page of jobs of 100 MB arguments, written by SQL, took 932 MB to show one. The
    stored size is tested first, as it costs no conversion to text (3 s for 100 MB):
    the list reads no more of a large value than its size. ``read_listed`` each job."""
    from .models import ReadableJSONField

    annotations = {}
    for field in _LISTED:
        column = f'"pgjobs_job"."{field}"'
        over = (
            f"CASE WHEN pg_column_size({column}) > %s THEN true "
            f"ELSE octet_length({column}::text) > %s END"
        )
        annotations[f"_listed_{field}"] = RawSQL(
            f"CASE WHEN {over} THEN NULL ELSE {column} END",
            (LISTED_BYTES, LISTED_BYTES),
            output_field=ReadableJSONField(),
        )
        annotations[f"_over_{field}"] = RawSQL(
            over, (LISTED_BYTES, LISTED_BYTES), output_field=BooleanField()
        )
    return queryset.defer(*_LISTED).annotate(**annotations)


def read_listed(job: Any) -> set[str]:
    """For a job read through ``listed``: set its args, kwargs and meta (those over the
    limit to None, meta to ``{}``) and return the names of those over it."""
    if not hasattr(job, "_listed_args"):
        return set()
    if "args" not in job.__dict__:  # not yet set: a deferred field would load whole
        for field in _LISTED:
            setattr(job, field, getattr(job, f"_listed_{field}"))
        if job.meta is None:
            job.meta = {}
    return {field for field in _LISTED if getattr(job, f"_over_{field}")}
