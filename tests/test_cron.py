"""Fire times are pure functions of (expression, timezone, instant): examples and properties,
for five- and six-field cron and @every intervals; catch-up plans and jitter."""

from __future__ import annotations

import itertools
import re
import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from django_pgjobs import cron
from django_pgjobs.cron import (
    COUNT_LIMIT,
    CatchUp,
    Cron,
    Interval,
    InvalidCron,
    UnknownTimezone,
    jitter_delay,
    plan,
    timing,
)

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
        ("   ", "required"),
        (b"* * * * *", r"must be a string, not bytes b'\* \* \* \* \*'"),  # not "is required"
        (5, "must be a string, not int 5"),
        ("* * * *", "has 4 fields"),
        ("0 * * * * * *", "has 7 fields"),
        ("60 * * * * *", "out of range"),
        ("50-10 * * * * *", "runs backwards"),
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


@pytest.mark.parametrize(
    "expression, said",
    [
        ("61 * * * *", "its minute field, '61', is wrong (it takes 0-59; croniter: "),
        ("0 9 * * mon-fry", "its day-of-week field, 'mon-fry', is wrong (it takes 0-7, sun-sat"),
        # Each day field names what it takes beyond numbers: L, W, # and ?.
        ("0 9 1LW * *", "its day-of-month field, '1LW', is wrong (it takes 1-31, L, 15W or ?"),
        (
            "0 9 * * fri#6",
            "its day-of-week field, 'fri#6', is wrong (it takes 0-7, sun-sat, fri#2 or ?",
        ),
        ("0 24 * * *", "its hour field, '24', is wrong (it takes 0-23"),
        ("60 0 9 * * *", "its second field, '60', is wrong (it takes 0-59"),
        ("0 0 1 13 *", "its month field, '13', is wrong (it takes 1-12 or jan-dec"),
    ],
)
def test_an_invalid_field_is_named(expression, said):
    # croniter names none ("[61 * * * *] is not acceptable, out of range"): a newcomer's
    # schedule in settings failed `check` with the whole expression to stare at.
    with pytest.raises(InvalidCron, match=re.escape(f"expression {expression!r}: {said}")):
        Cron.parse(expression)


@pytest.mark.parametrize(
    "expression, field",
    [
        ("0 2 15 * fri#2", "'fri#2'"),
        ("0 2 8-14 * 5#2", "'5#2'"),
        ("0 0 L * 1#1", "'1#1'"),
        ("0 0 2 15 * 5#2", "'5#2'"),  # six fields: the day fields are the last three
        ("0 2 15W * 1-5", "'15W'"),
        ("0 2 15W * sun", "'15W'"),
        ("30 0 2 1W * mon", "'1W'"),
    ],
)
def test_nth_weekday_and_nearest_weekday_are_refused_beside_the_other_day_field(expression, field):
    # Cron fires on a day matching either day field; croniter requires both once
    # one holds '#' or 'W' (or reads only the 'W'): "15 * fri#2" was refused as
    # "never fires (no such date)", "15W * 1-5" fired on the 15W days alone.
    with pytest.raises(InvalidCron, match=re.escape(field) + ".*can't be combined"):
        Cron.parse(expression)


def test_nearest_weekday_question_mark_and_nth_weekday_fire_as_documented():
    def days(expression: str) -> list[str]:
        fired = Cron.parse(expression, "Europe/Berlin").fire_times(
            utc(2026, 1, 1), utc(2026, 12, 31)
        )
        return [t.astimezone(BERLIN).strftime("%m-%d %a %H:%M") for t in fired]

    # 15W: the weekday nearest the 15th, in its month (2026-03-15 is a Sunday).
    assert days("0 2 15W * *")[2] == "03-16 Mon 02:00"
    # 1W never leaves its month: 2026-08-01 is a Saturday, so Monday the 3rd.
    assert days("0 2 1W * *")[7] == "08-03 Mon 02:00"
    # 31W in May 2026 (the 31st a Sunday) is Friday the 29th; a day past the month's
    # end is its last day, so February's 30W is Friday the 27th.
    assert days("0 2 31W * *")[4] == "05-29 Fri 02:00"
    assert days("0 2 30W * *")[1] == "02-27 Fri 02:00"
    # ? is * in a day field; the fifth Sunday of March 2026 is the spring-forward night.
    assert days("0 2 ? * 0#5") == ["03-29 Sun 03:00", "05-31 Sun 02:00", "08-30 Sun 02:00",
                                   "11-29 Sun 02:00"]  # fmt: skip
    assert days("0 2 ? * *") == days("0 2 * * *")


@pytest.mark.parametrize("name", ["Europe/Bxrlin", "europe/berlin", "", "../../etc/passwd", "CEST"])
def test_unknown_timezones_are_refused(name):
    with pytest.raises(UnknownTimezone, match="unknown timezone"):
        Cron.parse("* * * * *", name)


def test_naive_instants_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        Cron.parse("* * * * *").next_after(datetime(2026, 1, 1))


# -- catching up ------------------------------------------------------------------------

HOURLY = Cron.parse("0 * * * *")
GRACE = timedelta(seconds=60)


def test_a_new_schedule_fires_from_the_first_tick_after_now():
    result = plan(HOURLY, None, utc(2026, 1, 1, 10, 30))
    assert (result.fire, result.next_fire_at) == ((), utc(2026, 1, 1, 11))


def test_a_due_tick_fires_and_the_next_is_planned():
    result = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 11, 0, 0, 5000))
    assert (result.fire_at, result.next_fire_at, result.missed) == (
        utc(2026, 1, 1, 11),
        utc(2026, 1, 1, 12),
        0,
    )


def test_latest_fires_once_for_all_missed_ticks_at_the_latest_of_them():
    result = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 15, 20), CatchUp.LATEST)
    assert (result.fire, result.next_fire_at, result.missed) == (
        (utc(2026, 1, 1, 15),),
        utc(2026, 1, 1, 16),
        4,
    )


def test_latest_fires_nothing_older_than_its_window():
    window = timedelta(minutes=30)
    late = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 15, 40), CatchUp.LATEST, GRACE, window)
    assert (late.fire, late.missed) == ((), 5)
    inside = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 15, 20), "latest", GRACE, window)
    assert inside.fire == (utc(2026, 1, 1, 15),)


def test_none_drops_ticks_later_than_the_grace_period():
    late = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 15, 20), CatchUp.NONE, GRACE)
    assert (late.fire, late.next_fire_at, late.missed) == ((), utc(2026, 1, 1, 16), 5)
    on_time = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 15, 0, 30), CatchUp.NONE, GRACE)
    assert on_time.fire == (utc(2026, 1, 1, 15),)


def test_all_fires_every_missed_tick_within_the_window_up_to_the_limit():
    every = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 15, 20), CatchUp.ALL, GRACE)
    assert every.fire == tuple(utc(2026, 1, 1, hour) for hour in range(11, 16))
    assert every.missed == 0
    capped = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 15, 20), "all", GRACE, None, 2)
    assert (capped.fire, capped.missed) == ((utc(2026, 1, 1, 14), utc(2026, 1, 1, 15)), 3)
    window = timedelta(hours=2, minutes=30)
    recent = plan(HOURLY, utc(2026, 1, 1, 11), utc(2026, 1, 1, 15, 20), "all", GRACE, window)
    assert recent.fire == (utc(2026, 1, 1, 13), utc(2026, 1, 1, 14), utc(2026, 1, 1, 15))


def test_a_tick_within_the_grace_period_fires_whatever_the_window():
    result = plan(HOURLY, utc(2026, 1, 1, 15), utc(2026, 1, 1, 15, 0, 30), "latest", GRACE,
                  timedelta(seconds=1))  # fmt: skip
    assert result.fire == (utc(2026, 1, 1, 15),)


# -- seconds and intervals ------------------------------------------------------------------


def test_a_sixth_field_first_is_seconds():
    cron = Cron.parse("*/15 * * * * *")
    assert cron.fire_times(utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 1)) == [
        utc(2026, 1, 1, 10, 0, s) for s in (15, 30, 45)
    ] + [utc(2026, 1, 1, 10, 1)]
    assert Cron.parse("30 0 9 * * 1-5", "Europe/Berlin").next_after(utc(2026, 1, 2, 12)) == utc(
        2026, 1, 5, 8, 0, 30
    )
    assert Cron.parse("5-5 * * * * *").fire_times(utc(2026, 1, 1), utc(2026, 1, 1, 0, 2)) == [
        utc(2026, 1, 1, 0, 0, 5),
        utc(2026, 1, 1, 0, 1, 5),
    ]


def test_seconds_skipped_by_lord_howes_half_hour_jump_fire_at_the_jump():
    # 2026-10-04 02:00 on Lord Howe Island: clocks go from +10:30 to 02:30 at +11.
    cron = Cron.parse("15 15 2 * * *", "Australia/Lord_Howe")
    fired = cron.fire_times(utc(2026, 10, 2), utc(2026, 10, 6))
    assert fired == [
        utc(2026, 10, 2, 15, 45, 15),
        utc(2026, 10, 3, 15, 30),  # the jump: 02:15:15 never showed
        utc(2026, 10, 4, 15, 15, 15),
        utc(2026, 10, 5, 15, 15, 15),
    ]


def test_lord_howes_repeated_half_hour_is_quiet_for_frequent_seconds_schedules():
    # 2026-04-05 02:00 (+11) the clock goes back to 01:30 (+10:30).
    cron = Cron.parse("*/20 * * * * *", "Australia/Lord_Howe")
    fired = cron.fire_times(utc(2026, 4, 4, 14, 59, 30), utc(2026, 4, 4, 15, 30, 30))
    assert fired == [
        utc(2026, 4, 4, 14, 59, 40),
        utc(2026, 4, 4, 15, 30, 0),  # 01:30-01:59 showed again, and fired the first time
        utc(2026, 4, 4, 15, 30, 20),
    ]


def test_intervals_are_elapsed_time_from_the_unix_epoch_in_any_zone():
    every = timing("@every 90s", "Australia/Lord_Howe")
    assert isinstance(every, Interval)
    assert every.next_after(utc(2026, 1, 1, 0, 0, 1)) == utc(2026, 1, 1, 0, 1, 30)
    fired = every.fire_times(utc(2026, 4, 4, 14, 58), utc(2026, 4, 4, 15, 3))
    assert {b - a for a, b in itertools.pairwise(fired)} == {timedelta(seconds=90)}
    assert timing("@every 1h30m").next_after(utc(2026, 1, 1, 0, 59)) == utc(2026, 1, 1, 1, 30)
    assert timing(" @EVERY   2d ").expression == "@every 2d"


@pytest.mark.parametrize(
    "expression, message",
    [
        ("@every", "invalid interval"),
        ("@every 0s", "from 1s up to 365d"),
        ("@every 366d", "from 1s up to 365d"),
        ("@every 1s1m", "largest first"),
        ("@every 1.5h", "invalid interval"),
        ("@every -5s", "invalid interval"),
        ("@every 99999999999999999999s", "invalid interval"),
        ("@every 30s\x00", "invalid interval"),
    ],
)
def test_invalid_intervals_say_what_is_wrong(expression, message):
    with pytest.raises(InvalidCron, match=message):
        timing(expression)


# -- jitter ---------------------------------------------------------------------------------


def test_jitter_is_the_same_for_a_tick_wherever_it_is_computed_and_spreads_ticks_out():
    tick = utc(2026, 1, 1, 10)
    delays = [jitter_delay(f"report-{n}", tick, 60, timedelta(hours=1)) for n in range(1000)]
    assert delays == [
        jitter_delay(f"report-{n}", tick, 60, timedelta(hours=1)) for n in range(1000)
    ]
    assert all(timedelta(0) <= delay <= timedelta(seconds=60) for delay in delays)
    per_ten_seconds = [0] * 6
    for delay in delays:
        per_ten_seconds[min(int(delay.total_seconds() // 10), 5)] += 1
    assert all(120 < count < 220 for count in per_ten_seconds), per_ten_seconds
    assert jitter_delay("report-1", tick, 0, timedelta(hours=1)) == timedelta(0)


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
# Every zone a schedule may name ("localtime", each machine's own, is refused).
zones = st.sampled_from(sorted(zoneinfo.available_timezones() - cron.MACHINE_ZONES))
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
    st.sampled_from(list(CatchUp)),
)
def test_a_plan_never_fires_the_future_nor_twice(fields, zone, start, seconds_later, catch_up):
    cron = any_cron((*fields[:2], ("*", None), ("*", None), fields[2]), zone)
    next_fire_at = cron.next_after(start)
    now = next_fire_at + timedelta(seconds=seconds_later)
    result = plan(cron, next_fire_at, now, catch_up, GRACE)
    assert result.next_fire_at > now
    assert result.next_fire_at == cron.next_after(now)
    if catch_up is CatchUp.LATEST:
        assert result.fire_at == cron.latest_at_or_before(now)
    if result.fire_at is not None:
        assert next_fire_at <= result.fire_at <= now
        assert cron.is_fire_time(result.fire_at)
        if catch_up is CatchUp.NONE:
            assert now - result.fire_at <= GRACE
    # Planning again from where this plan leaves off fires nothing more until then.
    again = plan(cron, result.next_fire_at, now, catch_up, GRACE)
    assert again.fire == () and again.next_fire_at == result.next_fire_at


# -- properties of seconds, intervals, catching up and jitter -------------------------------

SECOND = timedelta(seconds=1)
seconds_expressions = st.tuples(field(0, 59), field(0, 59), field(0, 23), field(0, 6))
# Lord Howe's half-hour shifts and other odd zones are drawn often; any zone sometimes.
shifting_zones = st.one_of(
    st.sampled_from(["Australia/Lord_Howe", "Europe/Berlin", "America/New_York", "Asia/Tehran"]),
    zones,
)


def oracle_next_with_seconds(fields: tuple, zone: zoneinfo.ZoneInfo, after: datetime) -> datetime:
    """The rule in its own words, to the second: walk the real timeline a minute at a time
    (offsets change only at whole minutes since 1980), the clock running evenly within
    each minute; a local time fires the first moment the clock shows it or later."""
    seconds, minutes, hours, weekdays = (values for _, values in fields)

    def named_minute(local_minute: datetime) -> bool:
        weekday = (local_minute.weekday() + 1) % 7  # cron: 0 = Sunday
        return local_minute.minute in minutes and local_minute.hour in hours and weekday in weekdays

    def reading(instant: datetime) -> datetime:
        return instant.astimezone(zone).replace(tzinfo=None)

    start = after.replace(second=0, microsecond=0)
    # The highest the clock has shown up to ``after`` (it can show less after falling back).
    shown = max(
        [reading(after)] + [reading(start - k * MINUTE) + MINUTE - _US for k in range(1, 26 * 60)]
    )
    segment_start, segment_end = after, start + MINUTE
    while True:
        clock_then = reading(segment_start)
        clock_at_end = clock_then + (segment_end - segment_start)  # shown until just before
        local_minute = shown.replace(second=0, microsecond=0)
        while local_minute < clock_at_end:
            if named_minute(local_minute):
                for second in sorted(seconds):
                    local_time = local_minute + second * SECOND
                    if shown < local_time < clock_at_end:
                        return segment_start + max(local_time - clock_then, timedelta(0))
            local_minute += MINUTE
        shown = max(shown, clock_at_end - _US)
        segment_start, segment_end = segment_end, segment_end + MINUTE


_US = timedelta(microseconds=1)


@settings(max_examples=150, deadline=None)
@given(seconds_expressions, shifting_zones, instants)
def test_six_field_next_after_agrees_with_a_brute_force_walk_of_the_clock(fields, zone, after):
    texts = [text for text, _ in fields]
    cron = Cron.parse(" ".join(texts[:3]) + " * * " + texts[3], zone)
    assert cron.has_seconds
    assert cron.next_after(after) == oracle_next_with_seconds(fields, cron.zone, after)


def oracle_next_interval(step_seconds: int, after: datetime) -> datetime:
    """Walk whole seconds after ``after`` until one is a whole number of steps from the
    Unix epoch, counted as POSIX time does (elapsed seconds, no clock in sight)."""
    instant = after.replace(microsecond=0) + SECOND
    while int(instant.timestamp()) % step_seconds:
        instant += SECOND
    return instant


interval_steps = st.integers(1, 3 * 3600)


def interval_text(step: int) -> str:
    hours, rest = divmod(step, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (seconds, "s")]
    return "@every " + "".join(f"{n}{unit}" for n, unit in parts if n)


@settings(max_examples=150, deadline=None)
@given(interval_steps, shifting_zones, instants)
def test_interval_next_after_agrees_with_a_brute_force_walk_of_elapsed_seconds(step, zone, after):
    every = timing(interval_text(step), zone)
    assert every.step == timedelta(seconds=step)
    following = every.next_after(after)
    assert following == oracle_next_interval(step, after)
    assert every.latest_at_or_before(following) == following
    assert every.latest_at_or_before(following - _US) == following - every.step
    assert every.previous(following) == following - every.step


def any_timing(draw: st.DrawFn, zone: str) -> Cron | Interval:
    """A five-field or six-field cron expression, or an interval, that fires often."""
    kind = draw(st.sampled_from(["cron", "seconds", "interval"]))
    if kind == "interval":
        return timing(interval_text(draw(st.integers(60, 6 * 3600))), zone)
    fields = draw(frequent_expressions)
    texts = [text for text, _ in fields]
    five = " ".join(texts[:2]) + " * * " + texts[2]
    if kind == "seconds":
        # A few seconds a minute at most, so a day's ticks stay few enough to list.
        second = draw(st.integers(0, 59))
        five = f"{second} {five}"
    return any_cron_text(five, zone)


def any_cron_text(expression: str, zone: str) -> Cron:
    try:
        return Cron.parse(expression, zone)
    except InvalidCron:
        assume(False)
        raise


windows = st.one_of(st.none(), st.integers(0, 2 * 24 * 3600).map(lambda s: timedelta(seconds=s)))


@settings(max_examples=60, deadline=None)
@given(
    st.data(),
    dst_zones,
    instants,
    st.integers(0, 24 * 3600),
    st.sampled_from(list(CatchUp)),
    windows,
    st.integers(1, 30),
)
def test_a_plan_fires_what_its_policy_says_of_the_due_ticks_listed_one_by_one(
    data, zone, start, seconds_later, catch_up, window, limit
):
    schedule = any_timing(data.draw, zone)
    next_fire_at = schedule.next_after(start)
    now = next_fire_at + timedelta(seconds=seconds_later)
    due = schedule.fire_times(next_fire_at - _US, now)  # every tick in [next_fire_at, now]
    assert due and due[0] == next_fire_at
    result = plan(schedule, next_fire_at, now, catch_up, GRACE, window, limit)
    reach = max(window, GRACE) if window is not None else None
    if catch_up is CatchUp.NONE:
        reach = GRACE
    within = [tick for tick in due if reach is None or now - tick <= reach]
    expected = {
        CatchUp.NONE: within[-1:],
        CatchUp.LATEST: within[-1:],
        CatchUp.ALL: within[-limit:],
    }[catch_up]
    assert list(result.fire) == expected
    assert result.missed == min(len(due) - len(expected), COUNT_LIMIT)
    assert result.next_fire_at == schedule.next_after(now)
    again = plan(schedule, result.next_fire_at, now, catch_up, GRACE, window, limit)
    assert again.fire == () and again.next_fire_at == result.next_fire_at


@settings(max_examples=200, deadline=None)
@given(
    st.text(min_size=1, max_size=40),
    instants,
    st.integers(0, 86_400),
    st.integers(1, 7 * 86_400_000).map(lambda ms: timedelta(milliseconds=ms)),
)
def test_jitter_is_a_pure_function_bounded_by_the_jitter_and_the_next_tick(key, tick, jitter, gap):
    delay = jitter_delay(key, tick, jitter, gap)
    assert delay == jitter_delay(key, tick.astimezone(BERLIN), jitter, gap)  # same instant
    assert timedelta(0) <= delay <= timedelta(seconds=jitter)
    assert delay < gap
    assert delay % timedelta(milliseconds=1) == timedelta(0)


# -- L, W, # and ?: day fields against a calendar oracle ----------------------------------

WEEKDAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def last_day(day: datetime) -> int:
    following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (following - timedelta(days=1)).day


def nearest_weekday(wanted: int, day: datetime) -> int:
    """Quartz's ``nW``: the weekday nearest day ``wanted`` (a later day than the month
    has: its last), never in another month."""
    last = last_day(day)
    target = min(wanted, last)
    weekday = day.replace(day=target).weekday()  # Monday 0 ... Sunday 6
    if weekday == 5:  # Saturday: the Friday before, or the Monday after the 1st
        return target - 1 if target > 1 else target + 2
    if weekday == 6:  # Sunday: the Monday after, or the Friday before the last day
        return target + 1 if target < last else target - 2
    return target


# (text, does the local date match): day-of-month, then day-of-week.
day_of_month_specs = st.one_of(
    st.sampled_from([("*", None), ("?", None), ("L", lambda d: d.day == last_day(d))]),
    st.integers(1, 31).map(lambda n: (str(n), lambda d, n=n: d.day == n)),
    st.integers(1, 31).map(lambda n: (f"{n}W", lambda d, n=n: d.day == nearest_weekday(n, d))),
)
day_of_week_specs = st.one_of(
    st.sampled_from([("*", None), ("?", None)]),
    st.integers(0, 6).map(lambda w: (WEEKDAY_NAMES[w], lambda d, w=w: (d.weekday() + 1) % 7 == w)),
    st.tuples(st.integers(0, 7), st.integers(1, 5)).map(
        lambda wk: (
            f"{wk[0]}#{wk[1]}",
            lambda d, w=wk[0] % 7, k=wk[1]: (
                (d.weekday() + 1) % 7 == w and (d.day - 1) // 7 + 1 == k
            ),
        )
    ),
)


def day_matcher(dom: tuple, dow: tuple):
    """Cron's rule: both day fields restricted, either matching fires; else the one."""
    (_, on_month), (_, on_week) = dom, dow
    if on_month and on_week:
        return lambda d: on_month(d) or on_week(d)
    return on_month or on_week or (lambda d: True)


def oracle_next_on_days(minutes, hours, matches, zone, after: datetime) -> datetime:
    """oracle_next's walk of the clock, for any day predicate; hours with no day of
    interest on the clock are crossed an hour at a time."""

    def reading(instant: datetime) -> datetime:
        return instant.astimezone(zone).replace(tzinfo=None)

    def named(local_time: datetime) -> bool:
        return local_time.minute in minutes and local_time.hour in hours and matches(local_time)

    start = after.replace(second=0, microsecond=0)
    shown = max([reading(after)] + [reading(start - k * MINUTE) for k in range(26 * 60)])
    instant = start
    while True:
        # Offsets move by at most a few hours: dates 3 h ahead bound what a 1 h step shows.
        ahead = reading(instant + 3 * timedelta(hours=1))
        quiet = not any(matches(shown + timedelta(days=d)) for d in range((ahead - shown).days + 2))
        instant += timedelta(hours=1) if quiet else MINUTE
        now_showing = reading(instant)
        if now_showing > shown:
            first_new = shown.replace(second=0, microsecond=0) + MINUTE
            while first_new <= now_showing and not quiet:
                if named(first_new):
                    return instant
                first_new += MINUTE
            shown = now_showing


@settings(max_examples=80, deadline=None)
@given(field(0, 59), field(0, 23), day_of_month_specs, day_of_week_specs, field(1, 12),
       shifting_zones, instants)  # fmt: skip
def test_l_w_nth_and_question_mark_agree_with_a_calendar_walk_of_the_clock(
    minute, hour, dom, dow, month, zone, after
):
    both = dom[1] is not None and dow[1] is not None
    expression = f"{minute[0]} {hour[0]} {dom[0]} {month[0]} {dow[0]}"
    if both and ("W" in dom[0] or "#" in dow[0]):
        with pytest.raises(InvalidCron, match="can't be combined"):
            Cron.parse(expression, zone)
        return
    schedule = any_cron_text(expression, zone)  # "31 * feb" never fires: refused, skipped
    on_days = day_matcher(dom, dow)

    def matches(d: datetime) -> bool:
        return d.month in month[1] and on_days(d)

    following = schedule.next_after(after)
    assume(following - after < timedelta(days=400))  # keep the walk short
    assert following == oracle_next_on_days(minute[1], hour[1], matches, schedule.zone, after)
    latest = schedule.latest_at_or_before(following - _US)
    assert latest is None or (latest <= after and schedule.next_after(latest) == following)


def test_a_stepped_day_field_is_restricted_so_either_day_field_fires():
    # As documented: croniter's reading, not Vixie cron's (which ANDs a field starting
    # with '*'): odd days and Mondays, not odd Mondays.
    fired = Cron.parse("0 2 */2 * mon").fire_times(utc(2026, 1, 1), utc(2026, 1, 13, 3))
    assert [t.strftime("%d %a") for t in fired] == [
        "01 Thu", "03 Sat", "05 Mon", "07 Wed", "09 Fri", "11 Sun", "12 Mon", "13 Tue"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("expression", "zone"),
    [("0 0 29 2 *", "UTC"), ("0 0 1 1 *", "Pacific/Pago_Pago"), ("@every 365d", "UTC"),
     ("0 12 31 12 *", "Pacific/Kiritimati")],
)  # fmt: skip
def test_fire_times_up_to_the_last_time_python_holds_stop_there(expression, zone):
    """The tick after the last one a datetime holds raised ValueError ("year 10000 is
    out of range", from croniter) or OverflowError, instead of giving the list."""
    after, until = datetime(9980, 1, 1, tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    times = cron.timing(expression, zone).fire_times(after, until)
    assert times and after < times[0] and times[-1] <= until
    assert times == sorted(set(times))
    with pytest.raises(ValueError, match="must be timezone-aware"):  # not taken for the end
        cron.timing(expression, zone).fire_times(after, until.replace(tzinfo=None))
