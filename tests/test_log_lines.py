"""A failed attempt is one line of the worker's log, whatever its error's message holds:
a server's multi-line answer (an HTML error page) or a database error's DETAIL spread
over many lines, and a message could forge lines of its own."""

from __future__ import annotations

import logging

import pytest
from django.utils import timezone

from django_pgjobs import Job, logs, testing

pytestmark = pytest.mark.django_db

FORGED = "no such user\n2026-12-05 05:34:37,115 INFO job 1 (x) completed\r\nDETAIL:\u2028\x1b[2Jend"


def test_a_failed_and_a_discarded_attempt_are_one_line_each(caplog):
    job = Job.enqueue("tests.tasks_for_tests.raises_message", args=[FORGED], max_attempts=2)
    with caplog.at_level(logging.INFO, logger="django_pgjobs"), testing.freeze_time() as clock:
        testing.drain()
        job.refresh_from_db()
        clock.set(job.run_at)
        testing.drain()
    lines = [r.getMessage() for r in caplog.records if f"job {job.pk} " in r.getMessage()]
    assert len(lines) == 2, lines
    for line in lines:
        assert line.splitlines() == [line], line
        assert line.endswith(
            r"ValueError: no such user\n2026-12-05 05:34:37,115 INFO job 1 (x) completed\r\n"
            r"DETAIL:\u2028\x1b[2Jend"
        ), line
    job.refresh_from_db()
    assert job.errors[-1]["error"] == f"ValueError: {FORGED}", "the record keeps it as it is"


def test_one_line_escapes_every_line_break_and_unprintable_character_and_nothing_else():
    breaks = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    text = logs.one_line(f"a{breaks}b\té ü")
    assert text.splitlines() == [text]
    assert text == r"a\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029b" + "\té ü"
    # A terminal's escape sequences and a right-to-left override: a task's error
    # quoting its argument (any string the API takes) drove the operator's terminal.
    assert logs.one_line("a\x1b[2J\x07\x9b\u202eb\x00") == r"a\x1b[2J\x07\x9b\u202eb\x00"
    # A command's stderr ends with a line break: the line ends with the text.
    assert logs.one_line("CommandFailed: sh exited with code 3: oops\n") == (
        "CommandFailed: sh exited with code 3: oops"
    )


#: A task name as a row written by SQL may hold one: lines of its own, a terminal's
#: escape sequence (clear the screen), a right-to-left override.
HOSTILE_NAME = "x\n2026-12-05 05:34:37,115 INFO job 1 (x) completed\x1b[2J\u202eevil"


def test_a_row_s_names_reach_the_log_escaped(caplog, client):
    """Only the error a line quotes was escaped: a task name forged lines of the
    worker's log and drove the operator's terminal, and so did an API token's name."""
    from django_pgjobs import housekeeping, maintenance
    from django_pgjobs.api.tokens import issue
    from django_pgjobs.worker import Worker
    from tests.test_hardening_rows import insert_job, sql

    unknown = insert_job(task="'x'", max_attempts="2")
    unrunnable = insert_job(task="'x'", args="'{}'")
    held = insert_job(task="'x'", state="'executing'", lease="gen_random_uuid()", attempt="1",
                      attempted_at="now() - interval '1 day'")  # fmt: skip
    stranded = insert_job(task="'x'", state="'waiting'", pending_dependencies="1")
    sql("UPDATE pgjobs_job SET task = %s", [HOSTILE_NAME])
    token = issue("ci", ["*"], can_run=True)[1]
    sql("UPDATE pgjobs_apitoken SET name = %s", [HOSTILE_NAME])
    with caplog.at_level(logging.INFO, logger="django_pgjobs"):
        Worker().drain()
        maintenance.rescue_orphaned(timezone.now())
        housekeeping.prune(timezone.now())
        enqueued = {"task": "testproject.demo.tasks.add", "args": [1, 2]}
        headers = {"Authorization": f"Bearer {token}"}
        client.post("/jobs", enqueued, content_type="application/json", headers=headers)
        client.post("/jobs/run?limit=1", headers=headers)  # its line said the name raw
    lines = [r.getMessage() for r in caplog.records if "2026-12-05" in r.getMessage()]
    said = {pk for pk in (unknown, unrunnable, held, stranded) for line in lines
            if f"job {pk} (" in line}  # fmt: skip
    assert said == {unknown, unrunnable, held, stranded}, lines
    assert any(line.startswith("api: job ") for line in lines), lines  # the token's name
    assert any(line.startswith("api: token ") for line in lines), lines
    for line in lines:
        assert line.splitlines() == [line] and line.isprintable(), repr(line)
        assert r"x\n2026-12-05 05:34:37,115 INFO job 1 (x) completed\x1b[2J\u202eevil" in line
