"""Choosing jobs from what an operator types: ids, filters, instants and durations.

Everything is checked before a query is made, so odd input (a NUL, an id past
PostgreSQL's bigint, a date that isn't one) is a ``InvalidSelection`` naming
what was wrong, never a database error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from . import conf, limits
from .exceptions import InvalidOption, InvalidQueueName, PgJobsError
from .limits import MAX_ID, id_in_text
from .models import Job
from .queues import validate_name
from .states import JobState

#: Longest text accepted as a filter value (a task name column is 255 long).
MAX_TEXT = 255

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: In ASCII digits: \d and float() also read other scripts' ("٣h" was three hours).
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)$")
#: A duration with its unit, as an instant takes it ('20250501' is a date, not seconds).
_AGO = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([smhdw])$")


class InvalidSelection(PgJobsError, ValueError):
    """Operator input that names no job, state, queue, instant or duration."""


def parse_id(value: object) -> int:
    """A job id as ``limits.id_in_text`` reads it, after an optional '#' ('#12' is 12)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = value.removeprefix("#") if isinstance(value, str) else value
    pk = id_in_text(text)
    if pk is None:
        raise InvalidSelection(
            f"not a job id: {_shown(value)} (a whole number from 1 to {MAX_ID}, "
            "in ASCII digits without sign, spaces or leading zeros)"
        )
    return pk


def parse_ids(values: Iterable[object]) -> list[int]:
    return sorted({parse_id(value) for value in values})


def parse_duration(value: object, what: str = "duration") -> timedelta:
    """'90' or '90s', '15m', '2h', '7d', '1w' (a plain number is seconds)."""
    match = _DURATION.match(str(value).strip()) if _plain_text(value) else None
    if match is None:
        raise InvalidSelection(
            f"{what}: expected a number of seconds or a duration like 90s, 15m, 2h, 7d; "
            f"got {_shown(value)}"
        )
    number, unit = match.groups()
    try:
        return timedelta(seconds=float(number) * _UNITS[unit or "s"])
    except OverflowError:
        raise InvalidSelection(f"{what}: {_shown(value)} is too long") from None


def duration_as_given(value: str) -> str:
    """A duration ``parse_duration`` accepted, as it was typed, with its unit ('90'
    is '90s'): what a command says it went by."""
    number, unit = _DURATION.match(value.strip()).groups()  # type: ignore[union-attr]
    return f"{number}{unit or 's'}"


def duration_in_words(seconds: float) -> str:
    """``seconds`` in the largest unit that holds it a whole number of times, which
    ``parse_duration`` reads back as the same: 604800 is '1w', 5400 '90m', 0.25
    '0.25s' (``logs.delay`` rounds: 100000 s is '1d 3h' there)."""
    for unit in ("w", "d", "h", "m"):
        if seconds > 0 and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]:.0f}{unit}"
    return f"{Decimal(repr(float(seconds))).normalize():f}s"  # _DURATION reads no 1e-05


def parse_instant(value: object, now: datetime | None = None, what: str = "time") -> datetime:
    """An ISO 8601 date or date-time (naive ones on the project's clock), or a
    duration meaning that long before ``now`` ('2h' = two hours ago); a time a row
    holds (``limits.moment``), as typed: ``JobFilter.jobs`` compares its instant in UTC
    (PostgreSQL takes no offset over 15:59 nor a fraction of a second, Python does)."""
    now = now or timezone.now()
    text = str(value).strip()
    if _plain_text(value) and _AGO.match(text):
        try:
            return _stored(now - parse_duration(text, what), what)
        except OverflowError:
            raise InvalidSelection(f"{what}: {_shown(value)} is too long ago") from None
    try:
        instant = datetime.fromisoformat(text) if _plain_text(value) else None
    except ValueError:
        instant = None
    if instant is None:
        raise InvalidSelection(
            f"{what}: expected an ISO date or date-time (2025-05-01, 2025-05-01T14:30, "
            f"2025-05-01T14:30+02:00) or a duration ago (30m, 2h, 7d); got {_shown(value)}"
        )
    if timezone.is_naive(instant):
        instant = timezone.make_aware(instant)
    return _stored(instant, what)


def _stored(instant: datetime, what: str) -> datetime:
    """``instant`` if a row can hold it (years 1 and 9999 failed in SQL once in UTC)."""
    try:
        limits.moment(instant, what)
    except InvalidOption as error:
        raise InvalidSelection(str(error)) from None
    return instant


def parse_states(values: Iterable[str]) -> list[str]:
    known = [state.value for state in JobState]
    states = _split(values)
    unknown = [s for s in states if s not in known]
    if unknown:
        raise InvalidSelection(
            f"unknown state {_shown(unknown[0])}: the states are {', '.join(known)}"
        )
    return states


def parse_queues(values: Iterable[str]) -> list[str]:
    names = _split(values)
    try:
        return [validate_name(name) for name in names]
    except InvalidQueueName as error:
        raise InvalidSelection(str(error)) from None


def parse_tasks(values: Iterable[str]) -> list[str]:
    names = _split(values)
    for name in names:
        if len(name) > MAX_TEXT or not name.isprintable():
            raise InvalidSelection(
                f"not a task name: {_shown(name)} (a dotted path of at most {MAX_TEXT} "
                "printable characters)"
            )
    return names


@dataclass(frozen=True)
class JobFilter:
    """Jobs by id, or by state, queue, task and creation time (every given one must match)."""

    ids: tuple[int, ...] = ()
    states: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    since: datetime | None = None  # created at or after
    before: datetime | None = None  # created before

    @classmethod
    def parse(
        cls,
        *,
        ids: Iterable[object] = (),
        states: Iterable[str] = (),
        queues: Iterable[str] = (),
        tasks: Iterable[str] = (),
        since: object = None,
        before: object = None,
        now: datetime | None = None,
    ) -> JobFilter:
        """Check what an operator typed; raises ``InvalidSelection``."""
        now = now or timezone.now()
        return cls(
            ids=tuple(parse_ids(ids)),
            states=tuple(parse_states(_named(states, "--state"))),
            queues=tuple(parse_queues(_named(queues, "--queue"))),
            tasks=tuple(parse_tasks(_named(tasks, "--task"))),
            since=None if since is None else parse_instant(since, now, "--since"),
            before=None if before is None else parse_instant(before, now, "--before"),
        )

    @property
    def by_id(self) -> bool:
        return bool(self.ids)

    @property
    def has_filters(self) -> bool:
        return bool(self.states or self.queues or self.tasks or self.since or self.before)

    def jobs(self, using: str | None = None) -> QuerySet[Job]:
        rows = Job.objects.using(using or conf.get("DATABASE"))
        lookups: dict[str, Any] = {}
        if self.ids:
            lookups["pk__in"] = list(self.ids)
        if self.states:
            lookups["state__in"] = list(self.states)
        if self.queues:
            lookups["queue__in"] = list(self.queues)
        if self.tasks:
            lookups["task__in"] = list(self.tasks)
        # In UTC: an offset as typed may be one PostgreSQL doesn't take (+20:00).
        if self.since:
            lookups["created_at__gte"] = self.since.astimezone(UTC)
        if self.before:
            lookups["created_at__lt"] = self.before.astimezone(UTC)
        return rows.filter(**lookups)

    def describe(self) -> str:
        """What it selects, in words, for a confirmation question."""
        parts = []
        if self.ids:
            parts.append("id " + ", ".join(str(i) for i in self.ids))
        for label, values in (("state", self.states), ("queue", self.queues), ("task", self.tasks)):
            if values:
                parts.append(f"{label} {' or '.join(values)}")
        # "jobs created since ...", not "jobs with created since ...".
        times = []
        if self.since:
            times.append(f"created since {self.since.isoformat()}")
        if self.before:
            times.append(f"created before {self.before.isoformat()}")
        if not parts and not times:
            return "every job"
        head = f"jobs with {', '.join(parts)}" if parts else "jobs"
        if not times:
            return head
        return (", " if parts else " ").join([head, ", ".join(times)])


def _named(values: Iterable[str], option: str) -> list[str]:
    """``values``, each naming something: a filter given as ``""`` filtered nothing, so
    ``--queue "$QUEUE"`` with QUEUE unset selected the jobs of every queue."""
    values = list(values)
    for value in values:
        if isinstance(value, str) and not value.replace(",", "").strip():
            raise InvalidSelection(f"{option}: no name in {_shown(value)}")
    return values


def _split(values: Iterable[str]) -> list[str]:
    """Values given repeated or comma-separated, in order, without repeats."""
    seen: dict[str, None] = {}
    for value in values:
        if not _plain_text(value):
            raise InvalidSelection(f"not a name: {_shown(value)}")
        for part in value.split(","):
            if part.strip():
                seen[part.strip()] = None
    return list(seen)


def _plain_text(value: object) -> bool:
    return isinstance(value, str) and "\x00" not in value and len(value) <= 1000


def _shown(value: object) -> str:
    """``value`` as safe to print: control characters escaped, long text cut."""
    text = repr(value) if isinstance(value, str) else repr(str(value))
    return text if len(text) <= 80 else text[:77] + "..."
