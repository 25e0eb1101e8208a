"""When a cron schedule fires: pure functions of (expression, timezone, instant).

Nothing here reads a clock or the database, so every rule is a property test.

The timezone rule ("alarm clock"): each local time the expression names fires
once, at the first instant the zone's clock shows that time *or a later one*.

- Spring forward (02:00 -> 03:00 in Europe/Berlin): 02:30 never shows, so it
  fires at 03:00 CEST, the moment the clock jumps past it. Several skipped
  times fire once, together.
- Fall back (03:00 -> 02:00): 02:30 fires at its first occurrence (CEST) and
  not again when the clock repeats the hour.

So a daily job runs exactly once every day, and fire times only ever move
forward. Schedules that must keep an even rhythm through the repeated hour
(every 15 minutes, say) belong in UTC, which has no such hour.

Instants in and out are timezone-aware; results are in UTC.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

#: Shorthands croniter understands and we accept; "@reboot" has no meaning here.
ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)

_NAMES = (
    {},
    {},
    {},
    {m: n for n, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun"], 1)}
    | {m: n for n, m in enumerate(["jul", "aug", "sep", "oct", "nov", "dec"], 7)},
    {d: n for n, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
)
_RANGE = re.compile(r"^(?P<low>\w+)-(?P<high>\w+)(?:/(?P<step>\d+))?$")


class InvalidCron(ValueError):
    """A cron expression that is malformed or never fires."""


class UnknownTimezone(ValueError):
    """A timezone name that is not in the IANA database."""


class Misfire(StrEnum):
    """What to do with ticks missed while no scheduler was running."""

    #: Fire once for all missed ticks, as soon as a scheduler is back.
    CATCH_UP = "catch_up"
    #: Drop missed ticks; fire only a tick that is at most the grace period late.
    SKIP = "skip"


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The zone called ``name`` (IANA, e.g. "Europe/Berlin"), or UnknownTimezone."""
    if not isinstance(name, str) or name not in _known_timezones():
        raise UnknownTimezone(
            f"unknown timezone {name!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        )
    return zoneinfo.ZoneInfo(name)


def parse_expression(expression: str) -> str:
    """The expression, stripped, if it is valid 5-field cron that fires; else InvalidCron."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidCron("a cron expression is required, e.g. '*/5 * * * *'")
    expression = " ".join(expression.split())
    fields = expression.split(" ")
    if expression.startswith("@"):
        if expression.lower() not in ALIASES:
            raise InvalidCron(
                f"unknown cron shorthand {expression!r}; use one of {sorted(ALIASES)}"
            )
    elif len(fields) != 5:
        raise InvalidCron(
            f"cron expression {expression!r} has {len(fields)} fields; use 5: "
            "minute hour day-of-month month day-of-week"
        )
    readable = standard(expression)
    try:
        croniter(readable, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidCron(f"cron expression {expression!r} never fires (no such date)") from None
    except (CroniterBadCronError, CroniterError, ValueError, KeyError) as error:
        if "hash" in str(error).lower():
            # Jenkins' "H" needs a per-job seed; the schedule's name would do, but
            # the fire times would then change on rename. Not supported.
            error = "'H' (hashed) fields are not supported"
        raise InvalidCron(f"invalid cron expression {expression!r}: {error}") from None
    return expression


def standard(expression: str) -> str:
    """``expression`` with standard cron meaning, for croniter.

    croniter reads an equal range ("5-5", "sun-sun") as the whole cycle and a
    backwards one ("50-10") as wrapping around; in cron both are a mistake or a
    single value. Equal ranges become that value; backwards ones are refused.
    """
    if expression.startswith("@"):
        return expression
    fields = expression.split(" ")
    return " ".join(
        ",".join(_standard_part(part, index, expression) for part in field.split(","))
        for index, field in enumerate(fields)
    )


def _standard_part(part: str, index: int, expression: str) -> str:
    match = _RANGE.match(part)
    if not match:
        return part
    low, high = (_number(match[bound], index) for bound in ("low", "high"))
    if low is None or high is None:
        return part  # "L", "#" and friends: croniter's business
    if low == high:
        return match["low"]
    if low > high and not (index == 4 and high == 0):
        raise InvalidCron(
            f"cron expression {expression!r}: range {match['low']}-{match['high']} "
            "runs backwards; write it as two ranges"
        )
    return part


def _number(token: str, index: int) -> int | None:
    if token.isdigit():
        return int(token)
    return _NAMES[index].get(token.lower())


def _wall(instant: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """What the zone's clock shows at ``instant``, as a naive datetime."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def first_reached(wall_time: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first instant the zone's clock shows ``wall_time`` or later (UTC).

    For a time that exists that is its first occurrence; for one skipped by a
    forward jump it is the instant of the jump.
    """
    # fold=0: a repeated time's first occurrence; a skipped time read with the
    # offset from before the jump, which lands after the jump.
    after_jump = wall_time.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(after_jump, zone) == wall_time:
        return after_jump
    # Skipped: fold=1 reads it with the offset from after the jump, which lands
    # before the jump. Bisect (whole seconds: tz transitions are) for the jump.
    before = int(wall_time.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    after = int(after_jump.timestamp()) + 1
    while after - before > 1:
        middle = (before + after) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), zone) >= wall_time:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)


@dataclass(frozen=True)
class Cron:
    """A validated cron expression in a timezone."""

    expression: str
    zone: zoneinfo.ZoneInfo

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        """Validate; ``expression`` is kept in the form croniter reads as standard cron."""
        return cls(standard(parse_expression(expression)), parse_timezone(timezone))

    def _first_wall_after(self, instant: datetime) -> datetime:
        """The first local time named by the expression whose fire time is after ``instant``."""
        _require_aware(instant)
        # Local times up to the clock's reading now fired at or before now. During a
        # repeated hour the clock reads less than it already showed, so some later
        # times fired already too: skip them (at most the repeated hour's worth).
        times = croniter(self.expression, _wall(instant, self.zone))
        while True:
            candidate = times.get_next(datetime)
            if first_reached(candidate, self.zone) > instant:
                return candidate

    def next_after(self, instant: datetime) -> datetime:
        """The first fire time strictly after ``instant`` (UTC)."""
        return first_reached(self._first_wall_after(instant), self.zone)

    def latest_at_or_before(self, instant: datetime) -> datetime | None:
        """The last fire time at or before ``instant`` (UTC), None if there is none."""
        following = self._first_wall_after(instant)
        try:
            previous = croniter(self.expression, following).get_prev(datetime)
        except CroniterBadDateError:
            return None
        return first_reached(previous, self.zone)

    def fire_times(self, after: datetime, until: datetime) -> list[datetime]:
        """Every fire time in ``(after, until]``, in order."""
        found = []
        current = self.next_after(after)
        while current <= until:
            found.append(current)
            current = self.next_after(current)
        return found

    def is_fire_time(self, instant: datetime) -> bool:
        return self.next_after(instant - timedelta(microseconds=1)) == instant


@dataclass(frozen=True)
class Plan:
    """What a scheduler does for one schedule at one instant."""

    #: The tick to fire now, or None.
    fire_at: datetime | None
    #: The schedule's next tick after this one: the time to wake up for.
    next_fire_at: datetime
    #: Ticks that passed unfired (not counting ``fire_at``): late or dropped.
    missed: int = 0


def plan(
    cron: Cron,
    next_fire_at: datetime | None,
    now: datetime,
    misfire: Misfire | str = Misfire.CATCH_UP,
    grace: timedelta = timedelta(seconds=60),
    count_limit: int = 1000,
) -> Plan:
    """Decide what to fire at ``now`` for a schedule whose next tick is ``next_fire_at``.

    ``next_fire_at`` None means the schedule is new or its timing was edited: it
    fires from the first tick after ``now``, never for ticks before it. Otherwise
    every tick in ``[next_fire_at, now]`` is due; the latest of them fires once
    (``catch_up``), or only if it is at most ``grace`` late (``skip``).
    ``missed`` counts the others, up to ``count_limit``.
    """
    _require_aware(now)
    if next_fire_at is None or next_fire_at > now:
        return Plan(None, next_fire_at or cron.next_after(now))
    upcoming = cron.next_after(now)
    latest = cron.latest_at_or_before(now)
    if latest is None or latest < next_fire_at:
        # next_fire_at is not a tick of this expression (e.g. the tz database changed).
        return Plan(None, upcoming)
    missed = _count(cron, next_fire_at, latest, count_limit)
    on_time = now - latest <= grace
    if Misfire(misfire) is Misfire.SKIP and not on_time:
        return Plan(None, upcoming, missed + 1)
    return Plan(latest, upcoming, missed)


def _count(cron: Cron, first: datetime, last: datetime, limit: int) -> int:
    """How many ticks lie in ``[first, last)``, counting at most ``limit``."""
    count, current = 0, first
    while current < last and count < limit:
        count += 1
        current = cron.next_after(current)
    return count


def _require_aware(instant: datetime) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant!r} must be timezone-aware")
