"""What a job, a task, a queue or a schedule can hold: each option checked in Python
before anything is written.

PostgreSQL refuses values Python takes (a time before year 1 once in UTC, a UTC
offset of over 16 hours, a NUL in text, a number beyond its column) and readers
choke on others (a time no local time zone can show, a timeout that is not a
number): a refusal at the database aborts the caller's transaction, and a row
that can't be read stops every worker that claims it. So every entry point
checks its values here first, and the database's CHECK constraints say the same
for rows written any other way. The JSON values (args, kwargs, meta, results)
are ``payload``'s.

Each check returns the value as it is stored, or raises ``InvalidOption``
naming the field (``ValidationError`` for forms and model saves: ``validation_error``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from .exceptions import InvalidOption, JobGone


def plain_digits(text: str) -> bool:
    """Whether ``text`` is ASCII digits only. ``str.isdigit`` is true of ``²`` and ``①``
    too, which ``int()`` refuses: a check by ``isdigit`` alone let them through to a
    ValueError."""
    return text.isascii() and text.isdigit()


#: Stored times lie in [EARLIEST, END): a day inside Python's years 1-9999 at each
#: end, so that every stored time can also be shown in any local time zone.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
END = datetime(9999, 12, 31, tzinfo=UTC)

#: ``smallint`` columns (priorities).
SMALLINT = (-32768, 32767)
#: Attempts of one job: beyond any real retry policy, and each one may add an error record.
MAX_ATTEMPTS = 1_000_000
#: Longest timeout and backoff delay, in seconds: a year.
MAX_SECONDS = 365 * 24 * 3600.0
#: A ``now`` a pass is given, or reads from its clock, lies before this: what it
#: computes from it (a retry's backoff, a snooze, rescue's horizon) lies up to
#: MAX_SECONDS later, and must still be a time a row holds.
LATEST_NOW = END - timedelta(seconds=MAX_SECONDS)
#: Longest ``unique_for`` of a task, in seconds: a century (its window is subtracted from now).
MAX_UNIQUE_FOR = 100 * 365 * 24 * 3600.0
#: Most starts a rate limit allows per period: its window keeps the time of each.
MAX_RATE = 10_000
#: Longest unique_key, task and connector name a job row holds (``varchar(255)``).
TEXT_LENGTH = 255


def shown(value: Any, width: int = 80) -> str:
    """``repr(value)`` for a message, shortened; never raises (an int of 5,000 digits does)."""
    return shortened(repr_text(value), width)


def repr_text(value: Any) -> str:
    """``repr(value)`` whole, or what says why there is none; never raises."""
    try:
        return repr(value)
    except (ValueError, RecursionError):
        return f"<a {type(value).__name__} too large to show>"
    except Exception as error:  # a __repr__ of the caller's that fails
        return f"<a {type(value).__name__} whose repr() raised {type(error).__name__}>"


def shortened(text: str, width: int) -> str:
    """``text``, cut to ``width`` characters with ``...`` if it is longer."""
    return text if len(text) <= width else text[: width - 3] + "..."


def text_problem(value: str) -> str | None:
    """Why PostgreSQL can't store the string ``value`` (as text or in jsonb), or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000), which PostgreSQL can't store"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            bad = error.object[error.start]
            return f"contains a lone surrogate ({bad!r}), which is not text UTF-8 can encode"
    return None


def moment(value: Any, field: str = "run_at") -> datetime:
    """An aware datetime, in UTC, within [EARLIEST, END); else InvalidOption, also of
    one whose tzinfo's ``utcoffset()`` raises (a TypeError, an exception of its own:
    they reached the caller unchanged)."""
    if not isinstance(value, datetime):
        raise InvalidOption(
            field, f"must be a timezone-aware datetime, not {type(value).__name__} {shown(value)}"
        )
    try:
        offset = value.utcoffset()
        in_utc = None if offset is None else value.astimezone(UTC)
    except (OverflowError, ValueError):  # before year 1 or after 9999 once in UTC
        offset, in_utc = timedelta(0), None
    except Exception as error:  # a tzinfo of the caller's that fails in its own way
        raise InvalidOption(
            field,
            f"{shown(value)}: its time zone can't say its offset from UTC ({shown(error)})",
        ) from None
    if offset is None:
        raise InvalidOption(
            field,
            "must be timezone-aware (a naive datetime is no instant: use "
            "django.utils.timezone.now() + timedelta(...), not datetime.now(); "
            "timezone.make_aware() makes a naive time aware)",
        )
    if in_utc is None or not EARLIEST <= in_utc < END:
        raise InvalidOption(
            field,
            f"{_when(value)} is out of range: times must lie from "
            f"{EARLIEST.date().isoformat()} up to (not including) {END.date().isoformat()}, UTC",
        )
    return in_utc


def before(now: datetime, older_than: Any, field: str = "older_than") -> datetime:
    """``now - older_than``, for "older than" limits: a timedelta of 0 or more (a
    negative one reached into the future) that reaches no earlier than year 1
    (``timedelta.max`` raised OverflowError). ``now`` is checked as ``given_now``."""
    now = stored_moment(now, "now")
    if not isinstance(older_than, timedelta) or older_than < timedelta(0):
        raise InvalidOption(field, f"must be a timedelta of 0 or more, not {shown(older_than)}")
    try:
        return now - older_than
    except OverflowError:
        raise InvalidOption(
            field,
            f"reaches before year 1: {shown(older_than)} before {_when(now)}",
        ) from None


def _when(value: datetime) -> str:
    try:
        return value.isoformat()
    except Exception:  # a tzinfo that can't say its offset (any error of its own)
        return shown(value)


def whole_number(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidOption(field, f"must be a whole number, not {shown(value)}")
    if not low <= value <= high:
        raise InvalidOption(field, f"must be between {low} and {high}, not {shown(value)}")
    return value


#: Most threads one worker process runs jobs on (--concurrency, WORKER_CONCURRENCY):
#: past some thousands, more processes serve better than more threads.
MAX_CONCURRENCY = 10_000

#: Most jobs one worker process claims beyond its free threads (--prefetch,
#: WORKER_PREFETCH): ten times the largest prefetch that still paid off in the
#: deployment guide (1,000). Those jobs are in memory and executing in the database
#: until a thread takes them; 10**9 claimed the whole queue in one statement.
MAX_PREFETCH = 10_000

#: The largest id a ``bigint`` primary key holds.
MAX_ID = 2**63 - 1


def id_in_text(text: Any) -> int | None:
    """The row id ``text`` writes, or None: the one rule for a job id in text (an API
    path, a ``TaskResult.id``, an operator's argument). It is ``str(id)`` exactly: ASCII
    digits with no sign, white space, underscore or leading zero, from 1 to ``MAX_ID``.
    int() also reads " 1 ", "+1", "1_000", "01" and Arabic-Indic digits, so readers that
    used it named a job that text doesn't write (and raised on 5,000 digits)."""
    if not isinstance(text, str) or not plain_digits(text) or text[0] == "0":
        return None
    if len(text) > len(str(MAX_ID)):  # first: int() refuses over 4,300 digits
        return None
    value = int(text)
    return value if value <= MAX_ID else None


#: A number as an operator types one: ASCII digits, a minus sign, and for a number
#: that may have a fraction one decimal point.
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def number_in_text(text: Any, *, fraction: bool = False) -> int | float | None:
    """The number ``text`` writes in ASCII digits (a float with ``fraction``), or None:
    the one rule for a command's number option. int() and float() also read
    Arabic-Indic and full-width digits, " 5", "+5" and "1_000" (float() "nan", "inf"
    and "1e400"), so a number option took text no operator typed as that number."""
    pattern = _NUMBER if fraction else _WHOLE_NUMBER
    if not isinstance(text, str) or pattern.fullmatch(text) is None:
        return None
    try:
        return float(text) if fraction else int(text)
    except ValueError:  # int() refuses over 4,300 digits
        return None


def row_ids(values: Any, field: str) -> list[int]:
    """Ids of rows: an iterable of whole numbers from 1 to ``MAX_ID``, not a string,
    whose characters are no ids (``request_stop("12")`` stopped workers 1 and 2)."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidOption(field, f"must be a list of ids, not {shown(values)}")
    return [whole_number(value, field, 1, MAX_ID) for value in values]


def no_string(value: Any, field: str, what: str) -> None:
    """Refuse one string (or bytes) where a list of ``what`` is due: it was read as its
    letters (a queue 'd')."""
    if isinstance(value, str | bytes):
        raise InvalidOption(field, f"must be a list of {what}, not the string {shown(value)}")


def saved(job: Any, action: str) -> None:
    """Refuse a job never saved, or deleted by its ``delete()`` (JobGone): it has no
    row to change or wait for. (retry() said
    "job None: cannot go from available to available"; cancel() and wait() raised
    Job.DoesNotExist, "Job matching query does not exist".)"""
    if job.pk is None and not job._state.adding:
        # Read or saved once, its id gone: Model.delete() clears it. Its row is gone,
        # as for a job deleted otherwise, and not a job never saved.
        raise JobGone(None)
    if job.pk is None:
        raise InvalidOption(
            "job", f"was never saved (it has no id): {action}() needs a job from Job.enqueue()"
        )


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidOption(field, f"must be True or False, not {shown(value)}")
    return value


def priority(value: Any, field: str = "priority") -> int:
    return whole_number(value, field, *SMALLINT)


def max_attempts(value: Any, field: str = "max_attempts") -> int:
    return whole_number(value, field, 1, MAX_ATTEMPTS)


def seconds(value: Any, field: str, *, zero: bool = False, high: float = MAX_SECONDS) -> float:
    """A finite number of seconds, above 0 (or from 0 with ``zero``) and at most ``high``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOption(field, f"must be a number of seconds, not {shown(value)}")
    number = float(value) if abs(value) < 1e300 else math.inf  # an int too large for a float
    low = "from 0" if zero else "above 0"
    in_range = (number >= 0 if zero else number > 0) and number <= high
    if not (math.isfinite(number) and in_range):
        raise InvalidOption(
            field, f"must be a number of seconds {low} and at most {high:.0f}, not {shown(value)}"
        )
    return number


def timeout(value: Any, field: str = "timeout") -> float:
    return seconds(value, field)


def wait_timeout(value: Any) -> float | None:
    """A wait's ``timeout`` (``job.wait()``, an event stream's ``iter()``): None (no
    limit) or a number of seconds from 0 to a year, else InvalidOption: a NaN never ran
    out (the wait never ended), a string failed in the arithmetic."""
    return None if value is None else seconds(value, "timeout", zero=True)


def rate_limit(value: Any, field: str = "rate_limit") -> int:
    return whole_number(value, field, 1, MAX_RATE)


def rate_period(value: Any, field: str = "rate_period") -> float:
    return seconds(value, field)


def rate_problems(limit: Any, period: Any) -> dict[str, str]:
    """What is wrong with a rate limit (None: no limit) and its period, by field."""
    problems = {}
    for field, value, check in (
        ("rate_limit", limit, rate_limit),
        ("rate_period", period, rate_period),
    ):
        if value is None and field == "rate_limit":
            continue
        try:
            check(value, field)
        except InvalidOption as error:
            problems[field] = error.problem
    return problems


def fraction(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOption(field, f"must be a number, not {shown(value)}")
    if not 0 <= value <= 1:  # NaN fails too
        raise InvalidOption(field, f"must be a fraction from 0 to 1, not {shown(value)}")
    return float(value)


def text(value: Any, field: str, max_length: int = TEXT_LENGTH) -> str:
    """A non-empty string PostgreSQL can store in a ``varchar(max_length)``."""
    if not isinstance(value, str):
        raise InvalidOption(field, f"must be a string, not {type(value).__name__} {shown(value)}")
    if not value or len(value) > max_length:
        raise InvalidOption(field, f"must be 1 to {max_length} characters, not {len(value)}")
    problem = text_problem(value)
    if problem:
        raise InvalidOption(field, problem)
    return value


def host_name(value: Any, field: str = "host") -> str:
    """A host name as worker and scheduler rows record it (``varchar(255)``) and their
    connections' ``application_name`` carries: text (``text``), not only white space,
    and nothing unprintable (libpq takes no NUL; PostgreSQL shows others as ``?``)."""
    text(value, field)
    if not value.strip():
        raise InvalidOption(field, "must not be only white space")
    hidden = next((char for char in value if not char.isprintable()), None)
    if hidden is not None:
        raise InvalidOption(
            field, f"must not contain control or other unprintable characters, as {hidden!r}"
        )
    return value


def validate_time(value: datetime) -> None:
    """A model field validator: the time within [EARLIEST, END) (a naive one in the
    default time zone, as Django saves it), else ValidationError."""
    from django.core.exceptions import ValidationError

    try:
        stored_moment(value, "time", naive=True)
    except InvalidOption as error:
        raise ValidationError(error.problem, code="out_of_range") from None


def instant(value: Any, field: str, *, naive: bool | None = None) -> datetime:
    """``moment``: an aware datetime in UTC. A naive ``value`` is read in the default
    time zone, as Django reads one, where ``naive`` says so (unset: with USE_TZ off);
    else it is refused as ``moment`` refuses it. Snooze's and RetryAfter's until=."""
    from django.conf import settings
    from django.utils import timezone

    # Settings are read for a naive one only: an aware until= needs no configured Django.
    if is_naive(value) and (naive if naive is not None else not settings.USE_TZ):
        value = timezone.make_aware(value, timezone.get_default_timezone())
    return moment(value, field)


def is_naive(value: Any) -> bool:
    """Whether ``value`` is a naive datetime; a tzinfo that fails (whatever it raises:
    ``timezone.is_naive`` lets it through) is left to ``moment``, which refuses it."""
    try:
        return isinstance(value, datetime) and value.utcoffset() is None
    except Exception:  # any error of the tzinfo's own
        return False


def stored_moment(value: Any, field: str, *, naive: bool | None = None) -> datetime:
    """``instant``, returned as Django stores the time: aware in UTC, or naive in the
    default time zone with USE_TZ off. The one rule for every stored time: enqueue's
    run_at and a Django task's run_after, tokens' expires_at, the model fields'
    validator (``naive=True``)."""
    from django.conf import settings
    from django.utils import timezone

    in_utc = instant(value, field, naive=naive)
    if settings.USE_TZ:
        return in_utc
    return timezone.make_naive(in_utc, timezone.get_default_timezone())


def given_now(value: Any, field: str = "now") -> datetime | None:
    """A ``now`` given in place of the clock (a worker's drain, a scheduler's pass,
    maintenance), as the clock gives it (``stored_moment``), or None for the clock.
    Unchecked, a naive one was taken and then broke the arithmetic (leaving a drain's
    jobs executing, the scheduler's rescue failing), text or a time past 9999 failed
    in SQL, aborting the caller's transaction, and one within a year of 9999-12-31
    computed retries past it (``not_too_late``)."""
    return None if value is None else required_now(value, field)


def required_now(value: Any, field: str = "now") -> datetime:
    """``given_now`` where no clock stands in (maintenance): None is refused too."""
    not_too_late(instant(value, field), field)
    return stored_moment(value, field)


def not_too_late(now: datetime, field: str = "now") -> datetime:
    """``now`` (aware), if it lies before ``LATEST_NOW``; else InvalidOption."""
    if now.astimezone(UTC) >= LATEST_NOW:
        raise InvalidOption(
            field,
            f"{_when(now)} is too late: it must lie before {LATEST_NOW.date().isoformat()}, "
            "UTC, a year before the last time a row holds (a retry or a snooze computed "
            "from it may lie a year later)",
        )
    return now


def validation_error(check: Callable[[], Any]) -> Any:
    """``check()``, its InvalidOption turned into Django's ValidationError on its field
    (for ``Model.clean``/``save`` and forms)."""
    from django.core.exceptions import ValidationError

    try:
        return check()
    except InvalidOption as error:
        raise ValidationError({error.field: str(error)}) from None
