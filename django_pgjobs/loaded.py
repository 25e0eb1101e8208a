"""How much of a claimed job's JSON a worker loads: each value within ``limit()`` bytes.

Enqueue refuses arguments over ``MAX_PAYLOAD_BYTES``, but a row written any other way
(SQL, an older version, before the limit was lowered) may hold up to jsonb's 255 MB in
each column, and a claim of up to 1,000 jobs loaded them all: a worker that claimed
such a job could run out of memory, and so could the next after each rescue. So the
claim statements (and the rescue's, the reclaim's) send no value whose stored size is
over the limit, and say which in their ``oversized`` column (sql/claimed_json.sql). A job
without its args, kwargs or meta can't run: the worker discards it at once, saying
why (execution.unrunnable). Its errors and result are not needed to run it: left
out, the job runs.

Nor does a claim send a value over ``INLINE_BYTES`` stored (but within the limit):
a worker holds up to ``prefetch`` claimed jobs (1,000) that wait for a thread, and
300 jobs of 900 KB args took one to 1.5 GB of RSS. Such a value is *deferred*: the job's
thread reads it (``load_deferred``) when the job is about to run, fenced by the
claim's lease, and lets go of them once the job has run (``release``), before its
outcome waits to be written. A worker then holds whole values only for the jobs it
runs: its memory is bounded by about concurrency x limit + prefetch x ``INLINE_BYTES``
per column. Meta
is never deferred: the claim loop reads it (a rate limit's key in claim_keyed.sql,
isolation's crash count), and enqueue keeps it small.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from django.db.models.expressions import RawSQL

from . import payload, shown
from .states import JobState

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from .models import Job

logger = logging.getLogger(__name__)

#: The JSON columns a claim bounds, in the order of its ``oversized`` sizes.
COLUMNS = ("args", "kwargs", "meta", "errors", "result")

#: Those a job can't run without.
NEEDED_TO_RUN = frozenset({"args", "kwargs", "meta"})

#: Those a claim may defer: all but meta (see above).
DEFERRABLE = ("args", "kwargs", "errors", "result")

#: Most bytes a claim sends of one deferrable value, as stored: larger ones are read
#: when the job runs. 8 KB: a job's arguments are a few hundred bytes as a rule, so
#: nearly every claim stays as it was, and the one query more goes to jobs that carry
#: real data; yet a worker's 1,000 prefetched jobs hold at most 8 MB of each
#: deferrable column as stored, where the limit (2 MB by default) allowed 2 GB.
INLINE_BYTES = 8192

#: What a left-out value is taken for by readers of the job (a worker's own logs).
_EMPTY = {"errors": list, "result": lambda: None}


def limit() -> int:
    """Most bytes a claim loads of one JSON value, as PostgreSQL stores it: what the API
    and the admin show of one as text (``shown.limit``, twice ``MAX_PAYLOAD_BYTES``), so
    that whatever enqueue and workers write is loaded whole. The stored size, not the
    text's: ``pg_column_size`` reads it without loading the value (``octet_length`` of
    the text converts it all, on every claim)."""
    return shown.limit()


def inline(most: int) -> int:
    """Most bytes a claim sends of a deferrable value, as stored: ``INLINE_BYTES``, or
    ``most`` (the limit) if that is lower."""
    return min(INLINE_BYTES, most)


def deferred(sizes: list[int], sent: int, most: int) -> tuple[str, ...]:
    """The columns of a claimed job with stored ``sizes`` (in ``COLUMNS`` order) that
    its claim deferred: over ``sent`` bytes, within ``most``."""
    return tuple(
        column
        for column, size in zip(COLUMNS, sizes, strict=True)
        if column in DEFERRABLE and size is not None and sent < size <= most
    )


def load_deferred(job: Job) -> bool:
    """Read the values the claim of ``job`` deferred into it, on the thread about to run
    it: no query for a job that has none. Fenced by the claim's lease: False, nothing
    read, if the job is no longer executing under it (rescued, cancelled, reclaimed:
    taken away, as a lost lease anywhere; its holder decides what becomes of it)."""
    columns = getattr(job, "deferred", None)
    if not columns:
        return True
    rows = (
        type(job)
        .objects.using(job._state.db)
        .filter(pk=job.pk, state=JobState.EXECUTING, lease=job.lease)
    )
    row = rows.values_list(*columns).first()
    if row is None:
        return False
    job.__dict__.update(zip(columns, row, strict=True))
    job.deferred, job.reloadable = (), columns
    # JSON Python can't read back (written around enqueue): said as a claim says it.
    problems = [
        f"{column}: {value.problem}"
        for column, value in zip(columns, row, strict=True)
        if column in NEEDED_TO_RUN and isinstance(value, payload.Unreadable)
    ]
    if problems:  # the job is discarded at once (execution.unrunnable)
        job.unreadable = "; ".join(filter(None, [getattr(job, "unreadable", None), *problems]))
    return True


def release(job: Job) -> None:
    """Let go of the values ``load_deferred`` read, once the job has run: its outcome
    waits for the completer's next write, and a busy worker may hold up to
    concurrency + prefetch outcomes (150 jobs of 900 KB args held so took 390 MB).
    Anything that asks for one later (a ``job_completed`` receiver) has it read again
    by Django, as any deferred field."""
    for column in getattr(job, "reloadable", ()):
        job.__dict__.pop(column, None)
    job.reloadable = ()


def left_out(fields: dict[str, Any], sizes: list[int | None], most: int) -> dict[str, str]:
    """For a claimed job's ``fields`` whose values of ``sizes`` (stored bytes, in
    ``COLUMNS`` order) are over ``most``: set each left-out value to what stands for
    none (``models.stand_in``: never saved back), and return why for each one the
    job needs to run, by column."""
    problems = {}
    for column, size in zip(COLUMNS, sizes, strict=True):
        if size is None or size <= most:
            continue
        why = too_large(size, most)
        if column in NEEDED_TO_RUN:
            problems[column] = why
        else:
            fields[column] = _EMPTY[column]()
            logger.warning("job %s: %s: %s", fields.get("id"), column, why)
        # ``fields`` is the job's __dict__: Job.save() writes none of these back.
        fields.setdefault("_stand_ins", {})[column] = copy.copy(fields.get(column))
    return problems


def too_large(size: int, most: int) -> str:
    return (
        f"its JSON is {size:,} bytes stored, over the {most:,} a worker loads "
        "(twice PGJOBS['MAX_PAYLOAD_BYTES']); not loaded"
    )


def holder(jobs: QuerySet[Job]) -> Job | None:
    """The first of ``jobs`` (the job that holds a duplicate's unique key), each JSON
    value loaded only if stored in ``INLINE_BYTES`` or less, as a claim sends them. The
    others are left deferred: Django reads one whole when it is asked for, as any
    deferred field (``job.args``), and ``save()`` writes none it did not read. A
    holder written by SQL with 255 MB of args made every duplicate enqueue load them,
    for a caller that most often reads only its id."""
    annotations = {}
    for column in COLUMNS:
        field = jobs.model._meta.get_field(column)
        stored = f'pg_column_size("{jobs.model._meta.db_table}"."{field.column}")'
        annotations[f"_inline_{column}"] = RawSQL(
            f'CASE WHEN {stored} <= %s THEN "{jobs.model._meta.db_table}"."{field.column}" END',
            (INLINE_BYTES,),
            output_field=field.clone(),
        )
        annotations[f"_stored_{column}"] = RawSQL(stored, ())
    row = jobs.defer(*COLUMNS).annotate(**annotations).first()
    if row is None:
        return None
    for column in COLUMNS:
        value, size = row.__dict__.pop(f"_inline_{column}"), row.__dict__.pop(f"_stored_{column}")
        if size is None or size <= INLINE_BYTES:  # SQL NULL (no result) or small
            row.__dict__[column] = value
    return row


def become(job: Job, fields: dict[str, Any]) -> None:
    """Make ``job`` (a duplicate, as built) the job whose ``fields`` (``__dict__``) are
    given, read by ``holder``: the JSON values it left deferred are deferred in ``job``
    too, not ``job``'s own."""
    job.__dict__.update(fields)
    for column in COLUMNS:
        if column not in fields:
            job.__dict__.pop(column, None)
