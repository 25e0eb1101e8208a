"""pgjobs_notify_schedule_changed (migration 0024): it notifies pgjobs_schedules for a
change of every column of a schedule but those a scheduler writes at each tick, names
each such column (a column added to the model and to neither list fails here), and
costs a tick nothing like the size of the schedule's arguments."""

from __future__ import annotations

import re
import time

import pytest
from django.db import connection

from django_pgjobs.models import Schedule

pytestmark = pytest.mark.django_db(transaction=True)

#: What a scheduler writes at each tick, and updated_at: no change to wake schedulers for.
NOT_COMPARED = {"last_fire_at", "next_fire_at", "last_job_id", "updated_at"}

#: A change of each compared column, as SQL.
CHANGES = {
    "id": "id + 1000",
    "name": "name || '-renamed'",
    "cron": "'*/5 * * * *'",
    "timezone": "'Europe/Paris'",
    "task": "task || '_other'",
    "args": "'[9]'",
    "kwargs": """'{"a": 1}'""",
    "queue": "'other'",
    "priority": "5",
    "enabled": "NOT enabled",
    "created_at": "created_at - interval '1 day'",
    "catch_up": "'all'",
    "catch_up_limit": "7",
    "catch_up_window": "60",
    "jitter": "3",
    "overlap": "'skip'",
}
CHANGES_NOT_COMPARED = {
    "last_fire_at": "now()",
    "next_fire_at": "now() + interval '2 hours'",
    "last_job_id": "42",
    "updated_at": "updated_at + interval '1 second'",
}


def compared_columns() -> tuple[list[str], list[str]]:
    """The columns of the row values the database's function compares, OLD's and NEW's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = 'pgjobs_notify_schedule_changed'"
        )
        (source,) = cursor.fetchone()
    rows = [re.findall(rf"\b{side}\.(\w+)", found) for side in ("OLD", "NEW")
            for found in re.findall(rf"\(({side}\.\w+(?:,\s*{side}\.\w+)+)\)", source)]  # fmt: skip
    assert len(rows) == 2, source
    return rows[0], rows[1]


def sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_every_column_of_a_schedule_is_compared_or_named_as_not():
    old, new = compared_columns()
    assert old == new
    columns = {field.column for field in Schedule._meta.concrete_fields}
    assert set(old) == columns - NOT_COMPARED, (
        "pgjobs_notify_schedule_changed must compare each column of pgjobs_schedule, or "
        "this test name it in NOT_COMPARED: a migration replacing the function is due"
    )
    assert set(CHANGES) == columns - NOT_COMPARED and set(CHANGES_NOT_COMPARED) == NOT_COMPARED


def notified(listening, change: str, schedule_id: int) -> list[str]:
    sql(f"UPDATE pgjobs_schedule SET {change} WHERE id = %s", [schedule_id])
    return [n.payload for n in listening.notifies(timeout=0.3, stop_after=1)]


def test_a_change_of_each_compared_column_notifies_and_a_tick_does_not(second_connection):
    second_connection.execute("LISTEN pgjobs_schedules")
    for column, change in {**CHANGES, **CHANGES_NOT_COMPARED}.items():
        schedule = Schedule.objects.create(name=f"s-{column}", cron="* * * * *", task="a.b")
        sql("UPDATE pgjobs_schedule SET next_fire_at = now() + interval '1 hour' WHERE id = %s",
            [schedule.pk])  # fmt: skip
        list(second_connection.notifies(timeout=0.3))  # the INSERT's
        said = notified(second_connection, f"{column} = {change}", schedule.pk)
        expected = [str(schedule.pk + 1000 if column == "id" else schedule.pk)]
        assert said == ([] if column in NOT_COMPARED else expected), column
    schedule = Schedule.objects.get(name="s-updated_at")
    assert notified(second_connection, "next_fire_at = NULL", schedule.pk) == [str(schedule.pk)]


def test_a_tick_of_a_schedule_with_50_mb_of_arguments_takes_no_time_to_compare():
    # Before migration 0024 the function converted the whole row to jsonb twice: 0.4-0.5 s.
    schedule = Schedule.objects.create(name="large", cron="* * * * *", task="a.b")
    sql("UPDATE pgjobs_schedule SET args = jsonb_build_array(repeat('a', 50000000)) "
        "WHERE id = %s", [schedule.pk])  # fmt: skip
    took = []
    for _ in range(3):
        start = time.monotonic()
        sql("UPDATE pgjobs_schedule SET next_fire_at = now() + interval '1 minute', "
            "last_fire_at = now() WHERE id = %s", [schedule.pk])  # fmt: skip
        took.append(time.monotonic() - start)
    assert min(took) < 0.3, took
