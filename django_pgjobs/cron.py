"""When a schedule fires: pure functions of (expression, timezone, instant).

Nothing here reads a clock or the database, so every rule is a property test.

Two kinds of expression:

- cron, five fields (``minute hour day-of-month month day-of-week``) or six, with
  a seconds field first (``second minute hour ...``), read on the schedule's
  timezone's clock;
- ``@every 30s``, ``@every 1h30m``: elapsed time, the instants that are whole
  multiples of the interval since 1970-01-01 00:00 UTC, whatever the timezone.

The timezone rule for cron ("alarm clock"): each local time the expression names
fires once, at the first instant the zone's clock shows that time *or a later one*.

- Spring forward (02:00 -> 03:00 in Europe/Berlin): 02:30 never shows, so it
  fires at 03:00 CEST, the moment the clock jumps past it. Several skipped
  times fire once, together.
- Fall back (03:00 -> 02:00): 02:30 fires at its first occurrence (CEST) and
  not again when the clock repeats the hour.

So a daily job runs exactly once every day, and fire times only ever move
forward. Schedules that must keep an even rhythm through the repeated hour
(every 15 minutes, say) belong in UTC, which has no such hour, or are intervals.

Instants in and out are timezone-aware; results are in UTC.
"""

from __future__ import annotations

import functools
import hashlib
import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeAlias

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from .limits import plain_digits, shown

#: Shorthands croniter understands and we accept; "@reboot" has no meaning here.
ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)

#: Names each field of a five-field expression may use, by field (minute first).
_NAMES = (
    {},
    {},
    {},
    {m: n for n, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun"], 1)}
    | {m: n for n, m in enumerate(["jul", "aug", "sep", "oct", "nov", "dec"], 7)},
    {d: n for n, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
)
_RANGE = re.compile(r"^(?P<low>\w+)-(?P<high>\w+)(?:/(?P<step>\d+))?$")
#: croniter's "R", "R/5", "R(0-30)": a value drawn afresh at each reading.
_RANDOM = re.compile(r"^r(?:$|[/(])", re.IGNORECASE)

#: ``@every`` and its interval: days, hours, minutes and seconds, in that order.
EVERY = "@every"
# ASCII: Python's \d and int() would read any script's digits (Arabic-Indic, fullwidth).
_INTERVAL = re.compile(r"^(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,7})m)?(?:(\d{1,9})s)?$", re.ASCII)
#: Longest interval of ``@every``: a year. Less often is what cron is for.
MAX_INTERVAL = timedelta(days=365)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class InvalidCron(ValueError):
    """A cron expression that is malformed or never fires."""


class UnknownTimezone(ValueError):
    """A timezone name that is not in the IANA database."""


class CatchUp(StrEnum):
    """What to fire after ticks were missed (no scheduler ran, or it was held up)."""

    #: Only a tick that is at most the grace period (``MISFIRE_GRACE``) late.
    NONE = "none"
    #: The latest missed tick, once, if it is within the schedule's catch-up window.
    LATEST = "latest"
    #: Every missed tick within the window, oldest first, the latest ``limit`` of them.
    ALL = "all"


#: Names the IANA database lists that are no zone of their own: "localtime" is the
#: machine's /etc/localtime, so schedulers on hosts set differently fired apart.
MACHINE_ZONES = frozenset({"localtime"})


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - MACHINE_ZONES


#: Longest expression read: what a schedule's ``cron`` column holds. A longer one is
#: refused before croniter reads it (a list of 200,000 values took it 3 s).
MAX_EXPRESSION = 100


def parse_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The zone called ``name`` (IANA, e.g. "Europe/Berlin"), or UnknownTimezone."""
    if isinstance(name, str) and name in MACHINE_ZONES:  # a list is unhashable: below
        raise UnknownTimezone(
            f"timezone {name!r} is the zone each machine is set to, which another "
            "scheduler's may not be: name the zone, e.g. 'UTC' or 'Europe/Berlin'"
        )
    if not isinstance(name, str) or name not in _known_timezones():
        # Shortened: a form or a log line quoted a name of a megabyte whole.
        length = f" of {len(name):,} characters" if isinstance(name, str) and len(name) > 80 else ""
        raise UnknownTimezone(
            f"unknown timezone {shown(name)}{length}: use an IANA name such as 'UTC' or "
            "'Europe/Berlin'"
        )
    return zoneinfo.ZoneInfo(name)


def parse_expression(expression: str) -> str:
    """The expression with its spaces tidied, if it is a valid cron expression that
    fires (5 fields, or 6 with seconds first) or a valid ``@every``; else InvalidCron."""
    if not isinstance(expression, str):
        # Not "is required" of a value given, only of the wrong type.
        raise InvalidCron(
            f"a cron expression must be a string, not {type(expression).__name__} "
            f"{shown(expression)}, e.g. '*/5 * * * *' or '@every 30s'"
        )
    if not expression.strip():
        raise InvalidCron("a cron expression is required, e.g. '*/5 * * * *' or '@every 30s'")
    if len(expression) > MAX_EXPRESSION:
        # Before reading it, and shortened: each message below quotes the expression.
        raise InvalidCron(
            f"cron expression {shown(expression)} of {len(expression):,} characters is too "
            f"long: at most {MAX_EXPRESSION}"
        )
    expression = " ".join(expression.split())
    if expression.lower().startswith(EVERY):
        parse_interval(expression)
        return expression.lower()
    fields = expression.split(" ")
    if expression.startswith("@"):
        if expression.lower() not in ALIASES:
            raise InvalidCron(
                f"unknown cron shorthand {expression!r}; use one of {sorted(ALIASES)} "
                "or '@every <interval>'"
            )
    elif len(fields) not in (5, 6):
        raise InvalidCron(
            f"cron expression {expression!r} has {len(fields)} fields; use 5: "
            "minute hour day-of-month month day-of-week, or 6 with seconds first"
        )
    else:
        _check_day_fields(fields, expression)
    readable = standard(expression)
    try:
        croniter(readable, datetime(2000, 1, 1), second_at_beginning=len(fields) == 6).get_next(
            datetime
        )
    except CroniterBadDateError:
        raise InvalidCron(f"cron expression {expression!r} never fires (no such date)") from None
    except (CroniterBadCronError, CroniterError, ValueError, KeyError) as error:
        if "hash" in str(error).lower():
            # Jenkins' "H" needs a per-job seed; the schedule's name would do, but
            # the fire times would then change on rename. Not supported.
            error = "'H' (hashed) fields are not supported"
        elif refused := _refused_field(fields):
            name, field, values = refused
            error = f"its {name} field, {field!r}, is wrong (it takes {values}; croniter: {error})"
        raise InvalidCron(f"invalid cron expression {expression!r}: {error}") from None
    return expression


#: Each field's name and values, for an error that says which field is wrong (croniter
#: says "[61 * * * *] is not acceptable, out of range", naming none).
FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L, 15W or ?"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7, sun-sat, fri#2 or ?"),
)
SECOND = ("second", "0-59")


def _refused_field(fields: list[str]) -> tuple[str, str, str] | None:
    """The first field croniter refuses alone, the others "*", as its name, text and
    values (``("minute", "61", "0-59")``); None if each passes alone."""
    named = ((SECOND,) if len(fields) == 6 else ()) + FIELDS
    for index, ((name, values), field) in enumerate(zip(named, fields, strict=True)):
        alone = " ".join(field if at == index else "*" for at in range(len(fields)))
        try:
            croniter(standard(alone), datetime(2000, 1, 1), second_at_beginning=len(fields) == 6)
        except (CroniterBadCronError, CroniterError, ValueError, KeyError):
            return name, field, values
    return None


#: Day fields that restrict nothing: beside them the other day field alone decides.
_ANY_DAY = frozenset({"*", "?"})


def _check_day_fields(fields: list[str], expression: str) -> None:
    """Refuse ``#`` (nth weekday) or ``W`` (nearest weekday) beside a restricted other
    day field. Cron fires on a day matching either field; croniter requires both once
    one holds ``#`` ("15 * fri#2": never, refused as "no such date") or reads only the
    ``W`` ("15W * mon-fri": the 15W days alone), so its fire times would not be cron's."""
    day_of_month, day_of_week = fields[-3], fields[-1]
    if "#" in day_of_week and day_of_month not in _ANY_DAY:
        special, other = (day_of_week, "day-of-week"), (day_of_month, "day-of-month")
    elif "w" in day_of_month.lower() and day_of_week not in _ANY_DAY:
        special, other = (day_of_month, "day-of-month"), (day_of_week, "day-of-week")
    else:
        return
    raise InvalidCron(
        f"cron expression {expression!r}: its {special[1]} field, {special[0]!r}, can't be "
        f"combined with a {other[1]} ({other[0]!r}): cron fires on a day matching either, "
        f"which croniter does not do for '#' and 'W'; set the {other[1]} to '*' (or use "
        "two schedules)"
    )


def parse_interval(expression: str) -> timedelta:
    """The interval of ``@every <interval>`` (e.g. ``30s``, ``1h30m``, ``2d``)."""
    _, _, text = " ".join(expression.split()).lower().partition(" ")
    match = _INTERVAL.match(text.replace(" ", ""))
    if not text or match is None or not any(match.groups()):
        raise InvalidCron(
            f"invalid interval in {expression!r}: write '@every' and whole days, hours, "
            "minutes and seconds, largest first, e.g. '@every 30s', '@every 1h30m', '@every 2d'"
        )
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if not timedelta(seconds=1) <= interval <= MAX_INTERVAL:
        raise InvalidCron(
            f"interval of {expression!r} must be from 1s up to 365d; "
            "for less often, use a cron expression"
        )
    return interval


def standard(expression: str) -> str:
    """``expression`` with standard cron meaning, for croniter.

    croniter reads an equal range ("5-5", "sun-sun") as the whole cycle and a
    backwards one ("50-10") as wrapping around; in cron both are a mistake or a
    single value. Equal ranges become that value; backwards ones are refused.
    """
    if expression.startswith("@"):
        return expression
    fields = expression.split(" ")
    seconds = fields[:-5]  # the sixth field, first, if there is one; named like minutes
    return " ".join(
        ",".join(_standard_part(part, index, expression) for part in field.split(","))
        for index, field in enumerate(seconds + fields[-5:], start=-len(seconds))
    )


def _standard_part(part: str, index: int, expression: str) -> str:
    if _RANDOM.match(part):
        # Each reading draws anew: the next tick planned is never a tick when read
        # again, so the schedule would fire at random times or not at all.
        raise InvalidCron(
            f"cron expression {expression!r}: 'R' (random) fields are not supported; "
            "name the time, or use the schedule's jitter to spread ticks"
        )
    match = _RANGE.match(part)
    if not match:
        return part
    low, high = (_number(match[bound], index) for bound in ("low", "high"))
    if low is None or high is None:
        return part  # "L", "#" and friends: croniter's business
    if low == high or (index == 4 and (low, high) == (7, 0)):  # 7 and 0: both Sunday
        return match["low"]
    if low > high and not (index == 4 and high == 0):
        raise InvalidCron(
            f"cron expression {expression!r}: range {match['low']}-{match['high']} "
            "runs backwards; write it as two ranges"
        )
    return part


def _number(token: str, index: int) -> int | None:
    if plain_digits(token):
        return int(token)
    return _NAMES[max(index, 0)].get(token.lower())


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


def timing(expression: str, timezone: str = "UTC") -> Cron | Interval:
    """The ``Cron`` or ``Interval`` of a schedule's expression and timezone."""
    if isinstance(expression, str) and expression.strip().lower().startswith(EVERY):
        return Interval.parse(expression, timezone)
    return Cron.parse(expression, timezone)


class _FireTimes:
    """What both kinds derive from ``next_after`` and ``latest_at_or_before``."""

    def next_after(self, instant: datetime) -> datetime:
        raise NotImplementedError

    def latest_at_or_before(self, instant: datetime) -> datetime | None:
        raise NotImplementedError

    def fire_times(self, after: datetime, until: datetime) -> list[datetime]:
        """Every fire time in ``(after, until]``, in order, up to the last a datetime
        holds (the year 9999): the tick after it raised ValueError or OverflowError."""
        _require_aware(after)
        _require_aware(until)
        found = []
        current = self._next_held(after)
        while current is not None and current <= until:
            found.append(current)
            current = self._next_held(current)
        return found

    def _next_held(self, instant: datetime) -> datetime | None:
        """``next_after(instant)`` (aware), None when it lies past the year 9999."""
        try:
            return self.next_after(instant)
        except (OverflowError, ValueError):  # croniter's "year 10000 is out of range"
            return None

    def is_fire_time(self, instant: datetime) -> bool:
        return self.next_after(instant - _MICROSECOND) == instant

    def previous(self, tick: datetime) -> datetime | None:
        """The fire time before the fire time ``tick``, None if there is none."""
        return self.latest_at_or_before(tick - _MICROSECOND)


@dataclass(frozen=True)
class Cron(_FireTimes):
    """A validated cron expression (5 fields, or 6 with seconds first) in a timezone."""

    expression: str
    zone: zoneinfo.ZoneInfo

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        """Validate; ``expression`` is kept in the form croniter reads as standard cron."""
        parsed = parse_expression(expression)
        if parsed.startswith(EVERY):
            raise InvalidCron(f"{expression!r} is an interval, not cron: use cron.timing()")
        return cls(standard(parsed), parse_timezone(timezone))

    @property
    def has_seconds(self) -> bool:
        return not self.expression.startswith("@") and self.expression.count(" ") == 5

    def _times(self, start: datetime) -> croniter:
        return croniter(self.expression, start, second_at_beginning=self.has_seconds)

    def _first_wall_after(self, instant: datetime) -> datetime:
        """The first local time named by the expression whose fire time is after ``instant``."""
        _require_aware(instant)
        # Local times up to the clock's reading now fired at or before now. During a
        # repeated hour the clock reads less than it already showed, so some later
        # times fired already too: skip them (at most the repeated hour's worth).
        times = self._times(_wall(instant, self.zone))
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
            previous = self._times(following).get_prev(datetime)
        except CroniterBadDateError:
            return None
        return first_reached(previous, self.zone)


@dataclass(frozen=True)
class Interval(_FireTimes):
    """``@every <interval>``: the instants that are whole multiples of ``step`` since
    1970-01-01 00:00 UTC. Elapsed time: the timezone changes nothing."""

    expression: str
    zone: zoneinfo.ZoneInfo
    step: timedelta

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Interval:
        parsed = parse_expression(expression)
        if not parsed.startswith(EVERY):
            raise InvalidCron(f"{expression!r} is cron, not an interval: use cron.timing()")
        return cls(parsed, parse_timezone(timezone), parse_interval(parsed))

    def _steps(self, instant: datetime) -> int:
        """How many whole steps lie between the epoch and ``instant`` (floor)."""
        _require_aware(instant)
        return (instant - _EPOCH) // self.step

    def next_after(self, instant: datetime) -> datetime:
        return _EPOCH + (self._steps(instant) + 1) * self.step

    def latest_at_or_before(self, instant: datetime) -> datetime | None:
        return _EPOCH + self._steps(instant) * self.step


#: When a schedule fires.
Timing: TypeAlias = Cron | Interval


# -- jitter ----------------------------------------------------------------------------------


def jitter_delay(key: str, tick: datetime, jitter: float, gap: timedelta) -> timedelta:
    """How long after ``tick`` its job is due: a delay from 0 up to ``jitter`` seconds
    and less than ``gap`` (the time to the next tick), whole milliseconds.

    Random-looking but a pure function of the schedule's ``key`` (its name) and the
    tick, so every scheduler that could fire the tick computes the same delay, and
    schedules with the same expression spread out evenly.
    """
    bound = min(timedelta(seconds=jitter), gap - timedelta(milliseconds=1))
    if bound <= timedelta(0):
        return timedelta(0)
    digest = hashlib.sha256(f"{key}\x00{tick.astimezone(UTC).isoformat()}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return timedelta(milliseconds=int(fraction * (bound // timedelta(milliseconds=1) + 1)))


# -- what to fire ------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a scheduler does for one schedule at one instant."""

    #: The ticks to fire now, oldest first; empty for none.
    fire: tuple[datetime, ...]
    #: The schedule's next tick after these: the time to wake up for.
    next_fire_at: datetime
    #: Ticks that passed unfired (not counting those in ``fire``): late or dropped.
    missed: int = 0

    @property
    def fire_at(self) -> datetime | None:
        """The latest tick to fire now, or None."""
        return self.fire[-1] if self.fire else None


#: How many missed ticks ``plan`` counts at most (it walks them to count).
COUNT_LIMIT = 1000


def plan(
    timing: Timing,
    next_fire_at: datetime | None,
    now: datetime,
    catch_up: CatchUp | str = CatchUp.LATEST,
    grace: timedelta = timedelta(seconds=60),
    window: timedelta | None = None,
    limit: int = 100,
) -> Plan:
    """Decide what to fire at ``now`` for a schedule whose next tick is ``next_fire_at``.

    ``next_fire_at`` None means the schedule is new or its timing was edited: it
    fires from the first tick after ``now``, never for ticks before it. Otherwise
    every tick in ``[next_fire_at, now]`` is due, and fires by ``catch_up``:

    - ``none``: the latest, if it is at most ``grace`` late;
    - ``latest``: the latest, if it is at most ``window`` late (None: however late);
    - ``all``: each one at most ``window`` late, the latest ``limit`` of them.

    A tick at most ``grace`` late is on time: ``latest`` and ``all`` fire it
    whatever their window. ``missed`` counts the due ticks not fired, up to
    ``COUNT_LIMIT``.
    """
    _require_aware(now)
    if next_fire_at is None or next_fire_at > now:
        return Plan((), next_fire_at or timing.next_after(now))
    upcoming = timing.next_after(now)
    latest = timing.latest_at_or_before(now)
    if latest is None or latest < next_fire_at:
        # next_fire_at is not a tick of this expression (e.g. the tz database changed).
        return Plan((), upcoming)
    policy = CatchUp(catch_up)
    if policy is CatchUp.NONE:
        window = grace
    elif window is not None:
        window = max(window, grace)
    oldest = next_fire_at if window is None else max(next_fire_at, now - window)
    fire: list[datetime] = []
    current: datetime | None = latest
    while current is not None and current >= oldest:
        fire.append(current)
        if policy is not CatchUp.ALL or len(fire) >= limit:
            break
        current = timing.previous(current)
    fire.reverse()
    last_unfired = fire[0] if fire else upcoming
    return Plan(tuple(fire), upcoming, _count(timing, next_fire_at, last_unfired))


def _count(timing: Timing, first: datetime, last: datetime) -> int:
    """How many ticks lie in ``[first, last)``, counting at most ``COUNT_LIMIT``."""
    count, current = 0, first
    while current < last and count < COUNT_LIMIT:
        count += 1
        current = timing.next_after(current)
    return count


def _require_aware(instant: datetime) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant!r} must be timezone-aware")
