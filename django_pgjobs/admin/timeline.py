"""A job's history as a list of events, oldest first, for the detail page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import kept_errors, limits
from ..limits import shown
from ..models import Job
from ..states import JobState
from ..transitions import ERROR_LENGTH, TRACEBACK_LENGTH

S = JobState


@dataclass(frozen=True)
class Event:
    kind: str  # css class: enqueued, started, failed, snoozed, completed, discarded, ...
    title: str
    at: datetime | None = None
    error: str = ""
    traceback: str = ""
    note: str = ""
    placed: datetime | None = None  # where an event without a time of its own goes


def _parse(at: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(at) if at else None
        return None if parsed is None else limits.moment(parsed, "at")
    except (TypeError, ValueError):  # not a time, or one no time zone can show
        return None


def timeline(job: Job) -> list[Event]:
    """Enqueued, then each failed attempt with its error, then where the job is now."""
    events = [Event("enqueued", f"Enqueued on queue {job.queue}", job.created_at)]
    # A list of records, as workers write them; anything else (written by SQL) is shown.
    records = job.errors if isinstance(job.errors, list) else [job.errors] if job.errors else []
    for index, record in enumerate(records):
        if index == 1:
            events.extend(_not_kept(job, record))
        if not isinstance(record, dict):
            events.append(Event("failed", "An error record", error=shown(record, 2_000)))
            continue
        events.append(
            Event(
                "failed",
                f"Attempt {shown(record.get('attempt', '?'), 20)} failed",
                _parse(record.get("at")),
                error=kept_errors.clipped(record.get("error", ""), ERROR_LENGTH),
                traceback=kept_errors.clipped(record.get("traceback", ""), TRACEBACK_LENGTH),
            )
        )
    snoozed = _snoozed(job)
    if snoozed is not None:
        events.append(snoozed)
    if job.state == S.CANCELLED and _ran_without_failing(job, records):
        # Cancelled while it ran: no record of that attempt, but it happened.
        events.append(Event("started", f"Attempt {job.attempt} started", job.attempted_at))
    # In time order between enqueue and now (a snooze among failed attempts).
    events[1:] = sorted(events[1:], key=_in_time)
    events.append(_now(job))
    return events


def _in_time(event: Event) -> tuple[bool, float]:
    """Sorts by time (naive or aware alike), events without one last."""
    at = event.at or event.placed
    return (at is None, at.timestamp() if at else 0.0)


def _snoozed(job: Job) -> Event | None:
    """The job's snoozes, as its meta keeps them (how many, and the last one)."""
    record = job.meta.get("snoozed") if isinstance(job.meta, dict) else None
    if not isinstance(record, dict):
        return None
    count = record.get("count")
    times = f"{shown(count, 20)} times, the last " if count != 1 else ""
    return Event(
        "snoozed",
        f"Snoozed {times}until {_shown_time(record.get('until'))}",
        _parse(record.get("at")),
        note=kept_errors.clipped(record.get("reason") or "", 2_000) + " (no attempt counted)",
    )


def _shown_time(value: Any) -> str:
    parsed = _parse(value)
    return parsed.isoformat(sep=" ", timespec="seconds") if parsed else shown(value, 40)


def _ran_without_failing(job: Job, records: list[Any]) -> bool:
    """Whether the job's last attempt started and left no failure behind."""
    # A list, not a set: an attempt written by SQL may be a list or an object.
    failed = [record.get("attempt") for record in records if isinstance(record, dict)]
    return job.attempt >= 1 and job.attempted_at is not None and job.attempt not in failed


def _not_kept(job: Job, after: Any) -> list[Event]:
    """The error records between the first and the latest that the job no longer keeps
    (kept_errors.KEPT), where they were: just before the oldest of the latest."""
    count = getattr(job, "errors_not_kept", None)
    count = kept_errors.dropped(job) if count is None else count
    if not count:
        return []
    noun = "record" if count == 1 else "records"
    return [
        Event(
            "dropped",
            f"{count:,} more error {noun} not kept",
            note=f"A job keeps its first and its latest {kept_errors.KEPT - 1} error records.",
            placed=_parse(after.get("at")) if isinstance(after, dict) else None,
        )
    ]


def _now(job: Job) -> Event:
    state = S(job.state)
    if state == S.EXECUTING:
        where = f" on worker {job.worker_id}" if job.worker_id else ""
        return Event("started", f"Attempt {job.attempt} running{where}", job.attempted_at)
    if state == S.COMPLETED:
        return Event("completed", f"Attempt {job.attempt} completed", job.finished_at)
    if state == S.DISCARDED:
        return Event("discarded", f"Discarded after {job.attempt} attempt(s)", job.finished_at)
    if state == S.CANCELLED:
        return Event("cancelled", "Cancelled", job.finished_at)
    if state == S.RETRYABLE:
        return Event("pending", f"Attempt {job.attempt + 1} due", job.run_at)
    if state == S.SCHEDULED:
        return Event("pending", "Scheduled to run", job.run_at)
    if state == S.WAITING:
        count = job.pending_dependencies
        noun = "dependency" if count == 1 else "dependencies"
        return Event("pending", f"Waiting for {count} unfinished {noun}")
    return Event("pending", "Available: waiting for a worker since", job.run_at)
