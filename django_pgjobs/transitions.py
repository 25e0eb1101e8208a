"""One function per job state change, shared by the worker, the admin and the API.

Each change is one conditional UPDATE: it only matches rows in a state the
state machine allows to move, and outcome writes of an executing job also
match its lease, so a worker that lost its job (rescued, cancelled, handed
back) can't overwrite what happened since.
"""

from __future__ import annotations

import contextlib
import json
import logging
import traceback as tb
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import IntegrityError, connections, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from . import conf, db, events, limits, loaded, payload, sending, signals
from .backoff import Backoff
from .exceptions import JobGone, UniqueKeyConflict, UniqueKeyHeld
from .models import Job, Queue
from .redaction import Redactor, mask_credentials
from .states import ACTIVE, FINISHED, RETRY_FROM, InvalidTransition, JobState, sources_of
from .workers import CONTROL_CHANNEL

logger = logging.getLogger(__name__)
S = JobState


def _move(
    job: Job,
    to: JobState,
    *,
    lease_checked: bool = False,
    sources: Iterable[str] | None = None,
    where: Q | None = None,
    **values: Any,
) -> bool:
    """Move ``job`` to ``to`` if its stored state allows it; refresh it either way.

    ``sources`` narrows the states the state machine allows to move from; ``where``
    adds a condition of the caller's to the same UPDATE.
    """
    allowed = set(sources_of(to))
    if sources is not None:
        allowed &= {str(s) for s in sources}
    rows = Job.objects.using(job._state.db or conf.get("DATABASE")).filter(
        pk=job.pk, state__in=sorted(allowed)
    )
    if where is not None:
        rows = rows.filter(where)
    if lease_checked:
        rows = rows.filter(state=S.EXECUTING, lease=job.lease)
    moved = rows.update(state=to, **values) == 1
    _refresh(job)
    return moved


def _refresh(job: Job) -> bool:
    """Read ``job`` again, unless its row is gone: an operator may delete a job
    (once cancelled) while its thread still runs; the object then stays as it was.
    False if the row is gone. Not the JSON values its claim left out (loaded.py)."""
    fields = None
    if getattr(job, "oversized", None) is not None:
        fields = [f.attname for f in Job._meta.concrete_fields if f.attname not in loaded.COLUMNS]
    with contextlib.suppress(Job.DoesNotExist):
        job.refresh_from_db(fields=fields)
        return True
    return False


def _still_there(job: Job) -> bool:
    return Job.objects.using(job._state.db or conf.get("DATABASE")).filter(pk=job.pk).exists()


#: The meta key where a job's SMTP connector counts the mail it sent (connectors/sent_mail.py).
SENT_MAIL_KEY = "smtp_sent"

#: Most characters of an error record's message and traceback: each failed attempt adds one.
ERROR_LENGTH = 10_000
TRACEBACK_LENGTH = 50_000


def error_record(
    attempt: int, at: datetime, error: BaseException, redactor: Redactor | None = None
) -> dict[str, Any]:
    """What ``Job.errors`` keeps of one failed attempt. Basic and Bearer credentials are
    masked in the message and the traceback, and so are the secrets of ``redactor``.
    Then it is made text the database takes whatever the exception holds (a NUL or a
    lone surrogate quoted from bad input would fail the write of every outcome in its
    batch), and no longer than a page or two."""
    mask = redactor.text if redactor else mask_credentials
    kind = type(error)
    message = mask(error_line(error))
    return {
        "attempt": attempt,
        "at": at.isoformat(),
        "error": payload.storable_text(message, ERROR_LENGTH),
        "traceback": payload.storable_text(mask(_traceback_text(error)), TRACEBACK_LENGTH),
        "exception_class": payload.storable_text(f"{kind.__module__}.{kind.__qualname__}", 500),
    }


#: The files of pgjobs' own plumbing between a worker and a task: a stored traceback
#: starts at the first frame outside them (five frames of execution.py came before the
#: task's own).
_PLUMBING = frozenset(
    str(Path(__file__).with_name(name)) for name in ("execution.py", "middleware.py")
)


def _traceback_text(error: BaseException) -> str:
    """``error``'s traceback from the first frame outside ``_PLUMBING``; all of it if
    the plumbing raised it itself. Chained exceptions keep theirs whole."""
    first = error.__traceback__
    while first is not None and first.tb_frame.f_code.co_filename in _PLUMBING:
        first = first.tb_next
    return "".join(tb.format_exception(type(error), error, first or error.__traceback__))


def error_line(error: BaseException) -> str:
    """``ValueError: no such user``: how an error reads in ``Job.errors`` and in logs."""
    return f"{type(error).__name__}: {_message(error)}"


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception as failed:  # an exception whose __str__ raises
        return f"<str() of the exception raised {type(failed).__name__}>"


# -- outcomes of an attempt (worker only; lease-checked) --------------------------------


@dataclass
class Outcome:
    """What an attempt of ``job`` ended in, to be written by ``finish``."""

    job: Job
    state: JobState  # completed, retryable or discarded
    at: datetime
    result: Any = None
    error: BaseException | None = None
    #: Retryable: when to run again. None: when its queue's backoff says, read as the
    #: outcome is written (``finish``), its row unreadable as the attempt failed.
    run_at: datetime | None = None
    spread: float | None = None  # where in the jitter band the queue's backoff lands
    #: Masks the secrets the attempt loaded in its error and result before they are written.
    redactor: Redactor | None = None


def completed(job: Job, result: Any, now: datetime | None = None) -> Outcome:
    return Outcome(job, S.COMPLETED, now or timezone.now(), result=result)


def failed(
    job: Job,
    error: BaseException,
    now: datetime | None = None,
    *,
    backoff: Backoff | None = None,
    discard: bool = False,
    spread: float | None = None,
    run_at: datetime | None = None,
) -> Outcome:
    """Retryable (at ``run_at``, else when the backoff says), or discarded when attempts
    are used up or ``discard``."""
    now = now or timezone.now()
    if discard or job.attempt >= job.max_attempts:
        return Outcome(job, S.DISCARDED, now, error=error)
    if run_at is None:
        policy = backoff or queue_backoff(job.queue)
        run_at = policy.next_run_at(job.attempt, now, spread)
    return Outcome(job, S.RETRYABLE, now, error=error, run_at=run_at)


def failed_by_queue_later(
    job: Job, error: BaseException, now: datetime, spread: float | None = None
) -> Outcome:
    """Retryable when its queue's backoff says, the queue's row read as the outcome is
    written (``finish``, which ``record`` retries through an outage): it could not be
    read as the attempt failed (the database away, a lock on the table). The default
    backoff in its place retried a job within seconds that its queue spares a
    rate-limited service for minutes. Its attempts are not used up (``failed``
    checked: a discard reads nothing)."""
    return Outcome(job, S.RETRYABLE, now, error=error, spread=spread)


def finish(
    outcomes: Sequence[Outcome], publish: Callable[[Iterable[events.Change]], None] | None = None
) -> list[bool]:
    """Write many outcomes in one lease-checked UPDATE; True for each one written.

    A job whose lease was taken away (rescued, cancelled, handed back) is left
    as it is and gets False. Written jobs are updated from what the database
    returned (no second read) and their signal is sent, one per job. Their
    events go to ``publish`` (default: ``events.publish`` at once).
    """
    results: dict[int, bool] = {}
    by_alias: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_alias.setdefault(outcome.job._state.db or conf.get("DATABASE"), []).append(outcome)
        if outcome.redactor:  # the result as it is written, read back and signalled
            outcome.result = outcome.redactor.value(outcome.result)
    for using, group in by_alias.items():
        _by_queue_backoffs(group, using)
        rows = [_outcome_row(outcome) for outcome in group]
        outcomes_json = db.as_json(rows)
        written = {
            row["id"]: row
            for row in db.fetch_dicts(
                "finish", {"outcomes": outcomes_json, "most": loaded.limit()}, using
            )
        }
        for outcome, written_row in zip(group, rows, strict=True):
            job, row = outcome.job, written.get(outcome.job.id)
            results[job.id] = row is not None
            if row is None:
                _refresh(job)  # refused: show what happened instead
                continue
            # What the database now holds, without reading the whole row back.
            # Written as sent (and returned only when not known already).
            job.state, job.lease = outcome.state, None
            job.finished_at = None if outcome.state == S.RETRYABLE else outcome.at
            if outcome.run_at is not None:
                job.run_at = outcome.run_at
            if outcome.state == S.COMPLETED:
                job.result = _as_stored(outcome.result)
            errors = row["errors"]
            if isinstance(errors, str):
                errors = payload.loads(errors)
            if isinstance(errors, list):
                job.errors = errors
            elif "error" in written_row:
                # Too large to send back (loaded.py), or records Python can't read (an
                # Unreadable, written by SQL): the record written, at least.
                job.errors = [written_row["error"]]
        # finish.sql leaves publishing its events to us (see events.publish).
        changes = [(o.job, S.EXECUTING.value) for o in group if results[o.job.id]]
        if publish is None:
            events.publish(changes, using)
        else:
            publish(changes)
    for outcome in outcomes:
        if results[outcome.job.id]:
            _send_outcome_signal(outcome)
    return [results[outcome.job.id] for outcome in outcomes]


def _outcome_row(outcome: Outcome) -> dict[str, Any]:
    """One outcome as finish.sql reads it: JSON-ready values (text for uuids and
    times), so that the encoder never calls back into Python, which was most of its
    cost per job. A value that is None is left out (jsonb_to_recordset reads a
    missing key as NULL, as it does a null): a no-op job's outcome is four keys
    rather than seven, less to encode here and to parse in PostgreSQL. A lease as
    its 32 hex digits (PostgreSQL reads a uuid without hyphens too): ``str()`` of a
    UUID costs four times ``.hex``, about 1 us per job."""
    job = outcome.job
    row: dict[str, Any] = {
        "id": job.id,
        "lease": None if job.lease is None else job.lease.hex,
        "state": outcome.state.value,
    }
    if outcome.state != S.RETRYABLE:  # retryable jobs are not finished
        row["finished_at"] = outcome.at.isoformat()
    if outcome.result is not None:
        row["result"] = outcome.result
    if outcome.error is not None:
        row["error"] = error_record(job.attempt, outcome.at, outcome.error, outcome.redactor)
    if outcome.run_at is not None:
        row["run_at"] = outcome.run_at.isoformat()
    return row


def _as_stored(result: Any) -> Any:
    """A result as it reads back from JSON (tuples become lists, and so on)."""
    if result is None or type(result) in (str, int, bool):
        return result
    return json.loads(json.dumps(result))


def _send_outcome_signal(outcome: Outcome) -> None:
    """After the outcome is written: a receiver's error is logged (sending.py)."""
    job = outcome.job
    if outcome.state == S.COMPLETED:
        sending.send(signals.job_completed, "job_completed", job, Job, job=job)
    elif outcome.state == S.DISCARDED:
        sending.send(signals.job_discarded, "job_discarded", job, Job, job=job, error=outcome.error)
    else:
        sending.send(signals.job_retrying, "job_retrying", job, Job, job=job, error=outcome.error)


def complete(job: Job, result: Any, now: datetime | None = None) -> bool:
    """executing -> completed, keeping the return value. False if the lease was lost.
    ``now`` is checked as ``retry``'s is (the worker's own ``completed`` takes its clock's)."""
    return finish([completed(job, result, limits.given_now(now))])[0]


def fail(
    job: Job,
    error: BaseException,
    now: datetime | None = None,
    *,
    backoff: Backoff | None = None,
    discard: bool = False,
    spread: float | None = None,
) -> bool:
    """executing -> retryable (run_at by backoff) or discarded; the error is appended.

    Discarded when attempts are used up or ``discard`` is set. False if the lease was lost.
    ``now`` is checked as ``retry``'s is.
    """
    now = limits.given_now(now)
    outcome = failed(job, error, now, backoff=backoff, discard=discard, spread=spread)
    return finish([outcome])[0]


def hand_back(job: Job) -> bool:
    """executing -> available without counting the attempt (the worker is stopping)."""
    return _move(
        job,
        S.AVAILABLE,
        lease_checked=True,
        attempt=F("attempt") - 1,
        lease=None,
        worker=None,
    )


def _by_queue_backoffs(outcomes: Sequence[Outcome], using: str) -> None:
    """Set the run_at of the retryable outcomes without one (``failed_by_queue_later``)
    by their queues' backoffs, read in one query; a DatabaseError is raised, and the
    write tried again by its caller as the write's own would be."""
    pending = [o for o in outcomes if o.state == S.RETRYABLE and o.run_at is None]
    if not pending:
        return
    policies = queue_backoffs({o.job.queue for o in pending}, using)
    for outcome in pending:
        policy = policies[outcome.job.queue]
        outcome.run_at = policy.next_run_at(outcome.job.attempt, outcome.at, outcome.spread)


def queue_backoff(queue: str) -> Backoff:
    """The queue's retry policy (see ``queue_backoffs``)."""
    return queue_backoffs({queue}, conf.get("DATABASE"))[queue]


def queue_backoffs(queues: set[str], using: str) -> dict[str, Backoff]:
    """The retry policy of each queue; the default one for a queue without a row, or
    whose row holds values no policy can have (written around the admin's checks: by
    SQL, or before they existed)."""
    default = Backoff.from_dict(conf.get("BACKOFF"))
    policies = dict.fromkeys(queues, default)
    for row in Queue.objects.using(using).filter(name__in=queues):
        try:
            policies[row.name] = row.backoff()
        except ValueError as error:
            logger.error(
                "queue %r: its backoff is invalid (%s); using the default", row.name, error
            )
    return policies


# -- operator actions (admin, API, user code) --------------------------------------


#: The most attempts the ``attempt`` column (an int) counts. A job there can't be
#: retried: a retry leaves it ``attempt + 1`` attempts (``_at_least_one_more``), past
#: the column. (The claim statements keep such a counter where it is, so that the
#: job can't fail the claim of every job of its queue.) Only SQL writes one
#: (enqueue caps max_attempts).
ATTEMPT_LIMIT = 2**31 - 1


#: What ``include_completed`` of ``retry`` and ``retry_many`` takes: False (a completed
#: job is left alone), True (it runs again), or a cut-off: it runs again if it completed
#: no later than that (when an operator was asked about it: one that completed after
#: the question, or again since, is left alone).
IncludeCompleted = bool | datetime


def retry(
    job: Job, now: datetime | None = None, *, include_completed: IncludeCompleted = False
) -> Job:
    """Run the job again as soon as possible, with at least one attempt left.

    A completed job only if ``include_completed`` says so (``IncludeCompleted``): its
    task did its work (a mail sent), and running it again repeats that. The rule is in
    the UPDATE, so that a job completing after the caller's check is left alone too.
    InvalidTransition for a job in another state (a completed one left alone included)
    or at ``ATTEMPT_LIMIT``; JobGone (an InvalidTransition) for a job whose row was
    deleted or pruned; UniqueKeyHeld (an InvalidTransition) for a finished job whose
    unique_key an active job holds now (the unique index refused the UPDATE)."""
    limits.saved(job, "retry")
    now = limits.given_now(now) or timezone.now()
    if job.attempt >= ATTEMPT_LIMIT:
        raise InvalidTransition(job.pk, job.state, S.AVAILABLE)
    completed = _completed_ones(include_completed)
    # In the UPDATE too: the counter may have reached the limit since the job was read,
    # and attempt + 1 was then a DataError ("integer out of range").
    may_move = Q(attempt__lt=ATTEMPT_LIMIT) & ~Exists(_key_holders())
    try:
        with transaction.atomic(using=job._state.db or conf.get("DATABASE")):
            moved = _move(
                job,
                S.AVAILABLE,
                sources=RETRY_FROM,
                where=may_move if completed is None else completed & may_move,
                run_at=now,
                finished_at=None,
                max_attempts=_at_least_one_more(),
                meta=_meta_for_a_retry(),
            )
    except IntegrityError as error:  # a holder committed after the UPDATE's snapshot
        if not db.unique_key_taken(error):
            raise
        _refresh(job)
        raise _key_held(job) from error
    if not moved:
        if not _still_there(job):  # else the message named the state it had when read
            raise JobGone(job.pk, S.AVAILABLE)
        held = _key_held(job) if job.is_finished and job.unique_key is not None else None
        if held is not None and held.holder_id is not None:
            raise held
        raise InvalidTransition(job.pk, job.state, S.AVAILABLE)
    return job


def _key_holders() -> QuerySet[Job]:
    """The active jobs holding the unique_key of the outer query's job (none if it has
    no key): a retried finished job would hold it too, which the unique index refuses
    (jobs already active hold their own key, and are among these)."""
    return Job.objects.filter(
        queue=OuterRef("queue"), unique_key=OuterRef("unique_key"), state__in=sorted(ACTIVE)
    )


def _key_held(job: Job) -> UniqueKeyHeld:
    """What a retry of ``job`` is told when its key is held, naming the holder."""
    using = job._state.db or conf.get("DATABASE")
    holder = (
        Job.objects.using(using)
        .filter(queue=job.queue, unique_key=job.unique_key, state__in=sorted(ACTIVE))
        .exclude(pk=job.pk)
        .values_list("pk", flat=True)
        .first()
    )
    return UniqueKeyHeld(job.pk, job.queue, str(job.unique_key), holder)


def _completed_ones(include: IncludeCompleted) -> Q | None:
    """The condition a retry's UPDATE adds for ``include_completed`` (None: none). A
    completed job whose ``finished_at`` is NULL (written by SQL: a worker always writes
    it) counts as completed before any cut-off.

    A cut-off is a stored time (``limits.stored_moment``): InvalidOption, before any
    write, for a naive one (with USE_TZ) or one outside the years a row holds. Sent as
    given, a UTC offset PostgreSQL doesn't take (over 15:59, or with a fraction of a
    second; Python takes up to 23:59) failed the UPDATE, aborting the caller's
    transaction."""
    if include is True:
        return None
    if include is False:
        return ~Q(state=S.COMPLETED)
    if not isinstance(include, datetime):
        raise TypeError(f"include_completed takes a bool or a datetime, not {include!r}")
    cut_off = limits.stored_moment(include, "include_completed")
    return ~Q(state=S.COMPLETED) | Q(finished_at__lte=cut_off) | Q(finished_at__isnull=True)


def _meta_for_a_retry() -> Any:
    """A retried job's meta: a completed job runs again whole, so it forgets the mail its
    SMTP connector sent (``smtp_sent``, which spares a failed job's retry the messages
    its server accepted already); a re-run of a "send the welcome mail" job sent none.
    A meta that is no object (written by SQL) is left as it is, as rescue leaves it:
    PostgreSQL refuses ``-`` on a scalar, and one such job failed a whole bulk retry."""
    from django.db.models import Case, When
    from django.db.models.expressions import RawSQL

    meta = Job._meta.get_field("meta")
    forgotten = RawSQL(
        "CASE WHEN jsonb_typeof(meta) = 'object' THEN meta - %s ELSE meta END",
        [SENT_MAIL_KEY],
        output_field=meta,
    )
    return Case(When(state=S.COMPLETED, then=forgotten), default=F("meta"), output_field=meta)


def _at_least_one_more() -> Any:
    from django.db.models.functions import Greatest

    return Greatest(F("max_attempts"), F("attempt") + 1)


def cancel(job: Job, now: datetime | None = None) -> Job:
    """Cancel a job that has not finished. An executing job loses its lease, so
    whatever its worker reports afterwards is refused. JobGone for a job whose row
    was deleted or pruned (it raised Job.DoesNotExist)."""
    limits.saved(job, "cancel")
    now = limits.given_now(now) or timezone.now()
    if not _refresh(job):
        raise JobGone(job.pk, S.CANCELLED)
    if job.is_finished:
        return job
    using = job._state.db or conf.get("DATABASE")
    with transaction.atomic(using=using):
        # Its state now, under the row lock the UPDATE takes anyway: a worker may have
        # claimed it since it was read (its claim skips a locked row, so none can now).
        state = (
            Job.objects.using(using)
            .select_for_update()
            .filter(pk=job.pk)
            .values_list("state", flat=True)
            .first()
        )
        was_executing = state == S.EXECUTING
        moved = _move(job, S.CANCELLED, finished_at=now, lease=None)
        if moved and was_executing:
            # Tell the worker running it (on commit) so an async task stops now.
            db.notify(CONTROL_CHANNEL, f"cancel:{job.pk}", using)
    if moved:
        sending.send(signals.job_cancelled, "job_cancelled", job, Job, job=job)
    elif not job.is_finished:
        if not _still_there(job):  # deleted between the read and the UPDATE
            raise JobGone(job.pk, S.CANCELLED)
        raise InvalidTransition(job.pk, job.state, S.CANCELLED)
    return job


def snooze(job: Job, until: datetime, now: datetime | None = None, reason: str = "") -> bool:
    """executing -> scheduled until ``until`` (available if that is not after ``now``),
    without counting the attempt: the job could not start yet (it raised ``Snooze``,
    or its connector is busy or throttled). Lease-checked: False if the job was lost.
    The job's meta keeps the number of snoozes and the last one (``reason`` included).
    ``now`` is checked as ``retry``'s is, ``until`` as enqueue's run_at: sent as given, a
    UTC offset PostgreSQL refuses (+20:00, or with seconds) aborted the caller's
    transaction."""
    now = limits.given_now(now) or timezone.now()
    until = limits.stored_moment(until, "until")
    rows = db.fetch_dicts(
        "snooze",
        {
            "id": job.pk,
            "lease": job.lease,
            "until": until,
            "now": now,
            "reason": payload.storable_text(mask_credentials(reason), SNOOZE_REASON_LENGTH),
        },
        job._state.db or conf.get("DATABASE"),
    )
    if not rows:
        _refresh(job)  # refused: show what happened instead
        return False
    job.__dict__.update(rows[0], lease=None, worker_id=None)
    if isinstance(job.meta, str):  # jsonb as text, on Django's own connections
        job.meta = payload.loads(job.meta)
    return True


#: Most characters of a snooze's reason kept on the job.
SNOOZE_REASON_LENGTH = 500


# -- bulk operator actions: one UPDATE for a whole queryset ----------------------------


def can_be_retried(
    jobs: QuerySet[Job], *, include_completed: IncludeCompleted = True
) -> QuerySet[Job]:
    """The jobs of ``jobs`` that ``retry_many`` retries, for a count or a question first
    (how many of them completed, and would run again): by default with the completed
    ones, which a question counts (``include_completed`` as ``retry_many``'s).

    Jobs in other states (executing, waiting, available) are left out, and so are
    jobs at ``ATTEMPT_LIMIT`` (one made the whole UPDATE fail: integer out of range).
    Finished jobs whose unique_key is held are left out too (``key_held``).
    """
    candidates = _in_retry_states(jobs, include_completed)
    return candidates.filter(~_key_taken(candidates))


def _in_retry_states(jobs: QuerySet[Job], include_completed: IncludeCompleted) -> QuerySet[Job]:
    allowed = set(sources_of(S.AVAILABLE)) & {str(s) for s in RETRY_FROM}
    if include_completed is False:  # named by the states, so that their indexes serve
        allowed.discard(str(S.COMPLETED))
    retried = jobs.order_by().filter(any_state(allowed), attempt__lt=ATTEMPT_LIMIT)
    completed = _completed_ones(include_completed)
    return retried if completed is None else retried.filter(completed)


def any_state(states: Iterable[str]) -> Q:
    """Jobs in any of ``states``, ORed rather than IN: PostgreSQL then reads each state
    from the partial index that holds it (``pgjobs_job_rare_by_id``, ``_claim``,
    ``_executing``). An IN of states no one partial index holds read the whole table
    when nothing else narrowed it (a task: ``pgjobs retry --task``), and ``IN (...,
    completed) AND <> completed`` did even for rare states only."""
    ored = [Q(state=str(state)) for state in sorted(states)]
    if not ored:
        raise ValueError("any_state of no state")
    found = ored[0]
    for more in ored[1:]:
        found |= more
    return found


def _key_taken(candidates: QuerySet[Job]) -> Q:
    """A finished job of ``candidates`` whose unique_key an active job holds, or a newer
    job of ``candidates`` takes: of the jobs of a key, the newest (highest id) runs
    again, its arguments being the latest. One such job failed the whole UPDATE on the
    unique index, and nothing was retried."""
    newer = candidates.filter(
        state__in=sorted(FINISHED),
        queue=OuterRef("queue"),
        unique_key=OuterRef("unique_key"),
        pk__gt=OuterRef("pk"),
    )
    return Q(state__in=sorted(FINISHED), unique_key__isnull=False) & (
        Q(Exists(_key_holders())) | Q(Exists(newer))
    )


def key_held(jobs: QuerySet[Job], *, include_completed: IncludeCompleted = True) -> QuerySet[Job]:
    """The jobs of ``jobs`` that a retry leaves as they were because their unique_key is
    held (``_key_taken``), to be named after ``retry_many`` (``include_completed`` as
    its); after it, held by the jobs it retried too."""
    candidates = _in_retry_states(jobs, include_completed)
    return candidates.filter(_key_taken(candidates)).order_by("pk")


#: How many of the jobs ``key_held`` finds a caller names (the command, the admin).
KEY_HELD_NAMED = 20

#: What a caller says of the jobs ``key_held`` finds, before their ids.
KEY_HELD_SAID = (
    "left as they were: their unique_key is held by an active job (the newest job of a "
    "key is the one retried)"
)


def key_held_ids(
    jobs: QuerySet[Job], *, include_completed: IncludeCompleted = True
) -> tuple[list[int], int]:
    """The first ``KEY_HELD_NAMED`` ids of ``key_held(jobs)``, and how many there are
    (counted only past them)."""
    held = key_held(jobs, include_completed=include_completed)
    ids = list(held.values_list("pk", flat=True)[: KEY_HELD_NAMED + 1])
    if len(ids) <= KEY_HELD_NAMED:
        return ids, len(ids)
    return ids[:KEY_HELD_NAMED], held.count()


def retry_many(
    jobs: QuerySet[Job],
    now: datetime | None = None,
    *,
    include_completed: IncludeCompleted = False,
) -> int:
    """``retry`` for every job of ``jobs`` that may be retried (``can_be_retried``), in one
    UPDATE; the others are left alone (``key_held`` names those whose unique_key is
    held). Returns how many jobs were made available.
    Completed jobs among them run again only as ``include_completed`` says (as
    ``retry``'s, checked by the same UPDATE): callers ask first (the admin, the command).
    """
    now = limits.given_now(now) or timezone.now()
    retried = can_be_retried(jobs, include_completed=include_completed)
    for tries_left in reversed(range(RETRY_MANY_TRIES)):
        try:
            with transaction.atomic(using=jobs.db):  # a refused UPDATE spoils no transaction
                return retried.update(
                    state=S.AVAILABLE,
                    run_at=now,
                    finished_at=None,
                    max_attempts=_at_least_one_more(),
                    meta=_meta_for_a_retry(),
                )
        except IntegrityError as error:
            # A holder committed after the UPDATE's snapshot: the next one sees it,
            # unless the transaction's snapshot is older than it (REPEATABLE READ).
            if not db.unique_key_taken(error):
                raise
            if not tries_left:
                raise _out_of_sight(error, jobs.db) from error
    raise AssertionError("unreachable")


def _out_of_sight(error: IntegrityError, using: str) -> UniqueKeyConflict:
    """What ``retry_many`` raises when every try's UPDATE was refused a key held by a
    job its snapshot can't read, with the caller's isolation level (the savepoint left
    its transaction usable)."""
    isolation = db.fetch_dicts("transaction_isolation", {}, using)[0]["isolation"]
    queue, key = db.key_taken(error) or (None, None)
    done = "nothing was retried; retry the transaction (it then leaves such jobs as they were)"
    return UniqueKeyConflict(queue, key, isolation, done)


#: ``retry_many``'s UPDATEs at most, when keys are taken by jobs committed meanwhile.
RETRY_MANY_TRIES = 3


#: ``cancel_many``'s rounds at most: each cancels the jobs that workers claimed during
#: the one before (a rare race), so two are nearly always enough.
CANCEL_ROUNDS = 5


def cancel_many(jobs: QuerySet[Job], now: datetime | None = None) -> int:
    """``cancel`` for every unfinished job of ``jobs``, in one UPDATE; finished jobs
    are left alone. Returns how many jobs were cancelled.

    Like ``cancel``, workers running one of the jobs are told on commit (there are
    at most as many executing jobs as worker threads, so that list stays short).
    Unlike it, no ``job_cancelled`` signal is sent per job: that would mean loading
    every row. The database trigger still checks each change.
    """
    now = limits.given_now(now) or timezone.now()
    using = jobs.db
    unfinished = jobs.order_by().filter(any_state(sources_of(S.CANCELLED)))
    cancelled = 0
    with transaction.atomic(using=using):
        # A job a worker claims between the locking read and the UPDATE is left to the
        # next round (the UPDATE skips executing jobs it did not lock), so that each
        # executing job cancelled is one whose worker is told.
        for _ in range(CANCEL_ROUNDS):
            running = list(
                unfinished.filter(state=S.EXECUTING)
                .select_for_update()
                .values_list("pk", flat=True)
            )
            cancelled += unfinished.filter(~Q(state=S.EXECUTING) | Q(pk__in=running)).update(
                state=S.CANCELLED, finished_at=now, lease=None
            )
            for job_id in running:
                db.notify(CONTROL_CHANNEL, f"cancel:{job_id}", using)
            if not unfinished.filter(state=S.EXECUTING).exists():
                break
    return cancelled


def _hold(jobs: QuerySet[Job], using: str) -> None:
    """Lock the rows of ``jobs`` (FOR UPDATE) without reading them into Python."""
    sql, params = jobs.select_for_update().values("pk").query.sql_with_params()
    with connections[using].cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({sql}) AS held", params)


def delete_many(jobs: QuerySet[Job], now: datetime | None = None) -> int:
    """Delete every job of ``jobs`` that is not executing; returns how many.

    The dependency edges and the jobs go in one DELETE each (Django's cascade
    would load every job into memory first). Jobs that were waiting for a deleted
    unfinished job can never run: they are cancelled, as if their dependency had
    failed. Executing jobs are kept: cancel them first.
    """
    from .models import JobDependency

    now = limits.given_now(now)  # refused before anything is deleted
    using = jobs.db
    doomed = jobs.order_by().exclude(state=S.EXECUTING)
    ids = doomed.values("pk")
    with transaction.atomic(using=using):
        unfinished = doomed.exclude(state__in=sorted(FINISHED)).values("pk")
        # Held until the end, so that no worker claims one between the statements below
        # (a claim skips a locked row): one claimed meanwhile was kept, as executing,
        # but lost its edges and had its dependents cancelled. One claimed before
        # this lock is left out here, as executing, and so below.
        _hold(doomed.exclude(state__in=sorted(FINISHED)), using)
        stranded = list(
            JobDependency.objects.using(using)
            .filter(depends_on__in=unfinished, satisfied=False)
            .values_list("job_id", flat=True)
            .distinct()
        )
        # Each end through its own index, in one statement: no index serves an OR of
        # the two, which read every edge of the table to delete a job's few.
        edges = JobDependency.objects.using(using)
        ends = edges.filter(job__in=ids).values("pk")
        ends = ends.union(edges.filter(depends_on__in=ids).values("pk"), all=True)
        edges.filter(pk__in=ends)._raw_delete(using)
        deleted = doomed._raw_delete(using)
        cancel_many(Job.objects.using(using).filter(pk__in=stranded), now)
    return deleted
