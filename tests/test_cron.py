"""Fire times are pure functions of (expression, timezone, instant): examples and properties."""

from __future__ import annotations

import itertools
import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from django_pgjobs.cron import Cron, InvalidCron, Misfire, UnknownTimezone, plan

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
MINUTE = timedelta(minutes=1)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(times: list[datetime]) -> list[str]:
    return [t.astimezone(BERLIN).strftime("%m-%d %H:%M%z") for t in times]


# -- examples -------------------------------------------------------------------------


def test_fire_times_are_utc_instants_of_local_times():
    cron = Cron.parse("0 9 * * 1-5", "Europe/Berlin")
    assert cron.next_after(utc(2026, 1, 2, 12)) == utc(2026, 1, 5, 8)  # Monday 09:00 CET
    assert cron.next_after(utc(2026, 7, 3, 12)) == utc(2026, 7, 6, 7)  # Monday 09:00 CEST


def test_a_fire_time_is_strictly_after_the_instant():
    cron = Cron.parse("*/5 * * * *")
    assert cron.next_after(utc(2026, 1, 1, 10, 5)) == utc(2026, 1, 1, 10, 10)
    assert cron.next_after(utc(2026, 1, 1, 10, 4, 59)) == utc(2026, 1, 1, 10, 5)


def test_spring_forward_a_skipped_time_fires_when_the_clock_jumps_past_it():
    # 2026-03-29: Berlin clocks go from 02:00 CET straight to 03:00 CEST.
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")
    fired = cron.fire_times(berlin(2026, 3, 27), berlin(2026, 3, 31))
    assert local(fired) == [
        "03-27 02:30+0100",
        "03-28 02:30+0100",
        "03-29 03:00+0200",
        "03-30 02:30+0200",
    ]


def test_spring_forward_skipped_times_fire_once_together():
    cron = Cron.parse("*/30 * * * *", "Europe/Berlin")
    fired = cron.fire_times(berlin(2026, 3, 29, 1), berlin(2026, 3, 29, 4))
    # 02:00 and 02:30 don't exist: they fire with 03:00, once.
    assert local(fired) == [
        "03-29 01:30+0100",
        "03-29 03:00+0200",
        "03-29 03:30+0200",
        "03-29 04:00+0200",
    ]


def test_fall_back_a_repeated_time_fires_once_at_its_first_occurrence():
    # 2026-10-25: Berlin clocks go from 03:00 CEST back to 02:00 CET.
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")
    fired = cron.fire_times(berlin(2026, 10, 23), berlin(2026, 10, 27))
    assert local(fired) == [
        "10-23 02:30+0200",
        "10-24 02:30+0200",
        "10-25 02:30+0200",
        "10-26 02:30+0100",
    ]


def test_fall_back_the_repeated_hour_is_quiet_for_frequent_schedules():
    cron = Cron.parse("*/30 * * * *", "Europe/Berlin")
    fired = cron.fire_times(utc(2026, 10, 24, 23, 15), utc(2026, 10, 25, 2, 45))
    assert local(fired) == [
        "10-25 01:30+0200",
        "10-25 02:00+0200",
        "10-25 02:30+0200",
        # the clock shows 02:00-02:59 again: those times fired already
        "10-25 03:00+0100",
        "10-25 03:30+0100",
    ]


def test_the_same_frequent_schedule_in_utc_keeps_its_rhythm():
    cron = Cron.parse("*/30 * * * *", "UTC")
    fired = cron.fire_times(utc(2026, 10, 25, 0, 15), utc(2026, 10, 25, 2, 45))
    gaps = {b - a for a, b in itertools.pairwise(fired)}
    assert gaps == {timedelta(minutes=30)}


def test_latest_at_or_before_is_the_tick_before_the_next():
    cron = Cron.parse("0 * * * *")
    assert cron.latest_at_or_before(utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 10)
    assert cron.latest_at_or_before(utc(2026, 1, 1, 10, 59)) == utc(2026, 1, 1, 10)


def test_an_equal_range_is_one_value_as_in_standard_cron():
    # croniter alone reads "5-5" as the whole cycle, i.e. every minute.
    cron = Cron.parse("5-5 * * * *")
    assert cron.next_after(utc(2026, 1, 1, 10, 6)) == utc(2026, 1, 1, 11, 5)


def test_aliases_are_accepted():
    assert Cron.parse("@daily").next_after(utc(2026, 1, 1, 5)) == utc(2026, 1, 2)


@pytest.mark.parametrize(
    "expression, message",
    [
        ("", "required"),
        ("* * * *", "has 4 fields"),
        ("0 * * * * *", "has 6 fields"),
        ("61 * * * *", "out of range"),
        ("0 0 30 2 *", "never fires"),
        ("H * * * *", "'H'"),
        ("@reboot", "unknown cron shorthand"),
        ("every day", "has 2 fields"),
        ("50-10 * * * *", "runs backwards"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(expression, message):
    with pytest.raises(InvalidCron, match=message):
        Cron.parse(expression)


@pytest.mark.parametrize("name", ["Europe/Bxrlin", "europe/berlin", "", "../../etc/passwd", "CEST"])
def test_unknown_timezones_are_refused(name):
    with pytest.raises(UnknownTimezone, match="unknown timezone"):
        Cron.parse("* * * * *", name)


def test_naive_instants_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        Cron.parse("* * * * *").next_after(datetime(2026, 1, 1))


# -- misfire --------------------------------------------------------------------------

HOURLY = Cron.parse("0 * * * *")
GRACE = timedelta(seconds=60)


def test_a_new_schedule_fires_from_the_first_tick_after_now():
    result = plan(HOURLY, None, utc(2026, 1, 1, 10, 30))
    assert (result.fire_at, result.next_fire_at) == (None, utc(2026, 1, 1, 11))


def test_a_due_tick_fires_and_the_next_is_planned():
    result = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 11, 0, 0, 5000))
    assert (result.fire_at, result.next_fire_at, result.missed) == (
        utc(2026, 1, 1, 11),
        utc(2026, 1, 1, 12),
        0,
    )


def test_catch_up_fires_once_for_all_missed_ticks_at_the_latest_of_them():
    result = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 15, 20), Misfire.CATCH_UP)
    assert (result.fire_at, result.next_fire_at, result.missed) == (
        utc(2026, 1, 1, 15),
        utc(2026, 1, 1, 16),
        4,
    )


def test_skip_drops_ticks_later_than_the_grace_period():
    late = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 15, 20), Misfire.SKIP, GRACE)
    assert (late.fire_at, late.next_fire_at, late.missed) == (None, utc(2026, 1, 1, 16), 5)
    on_time = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 15, 0, 30), Misfire.SKIP, GRACE)
    assert on_time.fire_at == utc(2026, 1, 1, 15)


# -- properties -----------------------------------------------------------------------


# A cron field as (text, allowed values), so the oracle below needs no cron parser.
def field(low: int, high: int) -> st.SearchStrategy[tuple[str, frozenset[int]]]:
    value = st.integers(low, high)
    every = st.just(("*", frozenset(range(low, high + 1))))
    single = value.map(lambda v: (str(v), frozenset({v})))
    span = (
        st.tuples(value, value)
        .map(sorted)
        .map(lambda ab: (f"{ab[0]}-{ab[1]}", frozenset(range(ab[0], ab[1] + 1))))
    )
    step = st.tuples(st.integers(low, high), st.integers(1, high - low)).map(
        lambda ss: (f"{ss[0]}-{high}/{ss[1]}", frozenset(range(ss[0], high + 1, ss[1])))
    )
    stars = st.integers(1, high - low).map(lambda s: (f"*/{s}", frozenset(range(low, high + 1, s))))
    listed = st.lists(value, min_size=1, max_size=4, unique=True).map(
        lambda vs: (",".join(map(str, sorted(vs))), frozenset(vs))
    )
    return st.one_of(every, single, span, step, stars, listed)


# Day-of-month and month stay "*" so every expression fires within a week and the
# brute-force walk stays short; day-of-week then combines with AND, simply.
frequent_expressions = st.tuples(field(0, 59), field(0, 23), field(0, 6))
any_expressions = st.tuples(field(0, 59), field(0, 23), field(1, 31), field(1, 12), field(0, 6))
zones = st.sampled_from(sorted(zoneinfo.available_timezones()))
dst_zones = st.sampled_from(
    [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Asia/Tehran",
        "Pacific/Chatham",
        "Antarctica/Troll",
        "UTC",
        "Asia/Kolkata",
    ]
)
# Offsets were whole minutes everywhere by 1973; the oracle walks whole minutes.
instants = st.datetimes(datetime(1980, 1, 1), datetime(2060, 1, 1), timezones=st.just(UTC))


def any_cron(fields: tuple, zone: str) -> Cron:
    try:
        return Cron.parse(" ".join(text for text, _ in fields), zone)
    except InvalidCron:
        assume(False)
        raise


def oracle_next(fields: tuple, zone: zoneinfo.ZoneInfo, after: datetime) -> datetime:
    """The rule in its own words: walk the real timeline minute by minute, watching
    the wall clock; a local time fires the first moment the clock shows it or later."""
    minutes, hours, weekdays = (values for _, values in fields)

    def named(local_time: datetime) -> bool:
        weekday = (local_time.weekday() + 1) % 7  # cron: 0 = Sunday
        return local_time.minute in minutes and local_time.hour in hours and weekday in weekdays

    def reading(instant: datetime) -> datetime:
        return instant.astimezone(zone).replace(tzinfo=None)

    start = after.replace(second=0, microsecond=0)
    # The highest the clock has shown so far (it can show less after falling back).
    shown = max([reading(after)] + [reading(start - k * MINUTE) for k in range(26 * 60)])
    instant = start
    while True:
        instant += MINUTE
        now_showing = reading(instant)
        if now_showing > shown:
            first_new = shown.replace(second=0, microsecond=0) + MINUTE
            while first_new <= now_showing:
                if named(first_new):
                    return instant
                first_new += MINUTE
            shown = now_showing


@settings(max_examples=100, deadline=None)
@given(frequent_expressions, st.one_of(dst_zones, zones), instants)
def test_next_after_agrees_with_a_brute_force_walk_of_the_clock(fields, zone, after):
    cron = Cron.parse(" ".join(text for text, _ in fields[:2]) + " * * " + fields[2][0], zone)
    assert cron.next_after(after) == oracle_next(fields, cron.zone, after)


@settings(max_examples=200, deadline=None)
@given(any_expressions, zones, instants)
def test_fire_times_move_forward_and_bracket_every_instant(fields, zone, instant):
    cron = any_cron(fields, zone)
    following = cron.next_after(instant)
    assert following > instant and following.utcoffset() == timedelta(0)
    assert cron.next_after(following - timedelta(microseconds=1)) == following
    assert cron.is_fire_time(following)
    latest = cron.latest_at_or_before(instant)
    if latest is not None:
        assert latest <= instant
        assert cron.next_after(latest) == following, "a fire time between latest and next"


@settings(max_examples=100, deadline=None)
@given(any_expressions, zones, instants, instants)
def test_next_after_is_monotonic(fields, zone, a, b):
    cron = any_cron(fields, zone)
    early, late = sorted([a, b])
    assert cron.next_after(early) <= cron.next_after(late)


@settings(max_examples=100, deadline=None)
@given(
    frequent_expressions,
    dst_zones,
    instants,
    st.integers(0, 5 * 24 * 3600),
    st.sampled_from(list(Misfire)),
)
def test_a_plan_never_fires_the_future_nor_twice(fields, zone, start, seconds_later, misfire):
    cron = any_cron((*fields[:2], ("*", None), ("*", None), fields[2]), zone)
    next_fire_at = cron.next_after(start)
    now = next_fire_at + timedelta(seconds=seconds_later)
    result = plan(cron, next_fire_at, now, misfire, GRACE)
    assert result.next_fire_at > now
    assert result.next_fire_at == cron.next_after(now)
    if misfire is Misfire.CATCH_UP:
        assert result.fire_at == cron.latest_at_or_before(now)
    if result.fire_at is not None:
        assert next_fire_at <= result.fire_at <= now
        assert cron.is_fire_time(result.fire_at)
        if misfire is Misfire.SKIP:
            assert now - result.fire_at <= GRACE
    # Planning again from where this plan leaves off fires nothing more until then.
    again = plan(cron, result.next_fire_at, now, misfire, GRACE)
    assert again.fire_at is None and again.next_fire_at == result.next_fire_at
