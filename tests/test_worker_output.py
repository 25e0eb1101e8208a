"""What runworker and runscheduler print in a project whose LOGGING says nothing of us."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from django_pgjobs import Job, __version__, logs, stopsignals
from testproject.demo.tasks import add, sleep
from tests import conftest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **conftest.test_database_env(), "PGJOBS_TEST_NO_LOGGING": "1"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=conftest.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def enqueue_three() -> tuple[Job, Job, Job]:
    done = add.enqueue(1, 2)
    retried = Job.enqueue("tests.tasks_for_tests.raises_odd", args=["plain"], max_attempts=3)
    discarded = Job.enqueue("testproject.demo.tasks.always_fails", max_attempts=1)
    return done, retried, discarded


def test_runworker_speaks_by_default():
    done, retried, discarded = enqueue_three()
    result = manage("runworker", "--burst")
    assert result.returncode == 0, result.stderr
    out = result.stderr
    assert f"django-pgjobs {__version__} worker " in out
    assert " started: database " in out and "concurrency 10, prefetch auto, pid " in out
    # Each failed attempt reads as its error record does (it printed a repr() before).
    # With how many it has and when it runs again (the demo's backoff: 2 s, jittered).
    failed = f"job {retried.pk} (tests.tasks_for_tests.raises_odd) attempt 1 of 3 failed, "
    assert re.search(
        re.escape(failed) + r"retry in [12]\.\ds: " + re.escape("ValueError: ('plain', 'plain')\n"),
        out,
    ), out
    # The last one is one line, the discard's warning: it was a failed attempt line too.
    [line] = [line for line in out.splitlines() if f"job {discarded.pk} " in line]
    assert line.endswith(
        f"WARNING job {discarded.pk} (testproject.demo.tasks.always_fails) discarded after "
        "attempt 1: ValueError: boom"
    )
    assert f"job {done.pk} " not in out  # completions only from -v 2
    stop = next(line for line in out.splitlines() if " stopped after " in line)
    assert stop.endswith(
        "stopped after 3 attempts: 1 completed, 1 failed and will retry, 1 discarded"
    )
    assert "JobState" not in out


def test_a_summary_reads_in_a_fixed_order_not_the_order_things_happened():
    from django_pgjobs.states import JobState

    counts = {JobState.DISCARDED: 1, "odd": 2, JobState.COMPLETED: 3, JobState.RETRYABLE: 0}
    assert logs.in_words(counts) == "3 completed, 1 discarded, 2 odd"
    assert logs.in_words({"fired": 0}) == "no jobs"


def test_a_stop_summary_says_a_failed_attempt_that_will_retry_plainly():
    """The stop line's "1 retryable" read as a job still pending, where its attempt had
    failed."""
    from collections import Counter

    from django_pgjobs.states import JobState
    from django_pgjobs.worker import _summary

    stats = Counter({JobState.RETRYABLE: 2, JobState.COMPLETED: 1, "scheduled": 1})
    said = _summary(stats)
    assert said == " after 3 attempts: 1 completed, 2 failed and will retry, 1 snoozed"


def test_a_stop_summary_counts_a_job_handed_back_as_no_attempt():
    """A job handed back at a stop is not an attempt (its attempt is not counted): a
    prefetched one read "stopped after 1 attempt: 1 handed back"."""
    from collections import Counter

    from django_pgjobs.worker import _summary

    assert _summary(Counter({"handed back": 1})) == ": 1 handed back"
    said = _summary(Counter({"completed": 2, "handed back": 1}))
    assert said == " after 2 attempts: 2 completed, 1 handed back"


def test_a_retry_delay_reads_as_a_person_says_it():
    said = [logs.delay(s) for s in (-1, 0.94, 9.96, 12.4, 185, 300, 7800, 86400, 100_000)]
    assert said == ["0.0s", "0.9s", "10.0s", "12s", "3m 5s", "5m", "2h 10m", "1d", "1d 3h"]


def test_a_scheduler_says_its_maintenance_in_words(caplog):
    # It said "rescue every 0:00:30, prune every 0:05:00": a timedelta's str().
    from django_pgjobs.scheduler import Scheduler

    caplog.set_level(logging.INFO, logger="django_pgjobs.scheduler")
    scheduler = Scheduler()
    scheduler.start()
    scheduler.shutdown()
    [line] = [r.getMessage() for r in caplog.records if " started: database " in r.getMessage()]
    assert "schedule(s), maintenance: rescue every 30s, prune every 5m, pid " in line


def where_libpq_goes(monkeypatch: pytest.MonkeyPatch, host: str, port: int) -> str:
    """The start line's database, for a project whose DATABASES names no HOST or PORT
    while the environment's PGHOST and PGPORT say ``host`` and ``port``."""
    monkeypatch.setitem(connection.settings_dict, "HOST", "")
    monkeypatch.setitem(connection.settings_dict, "PORT", "")
    monkeypatch.setenv("PGHOST", host)
    monkeypatch.setenv("PGPORT", str(port))
    connection.close()
    try:
        return logs.database("default")
    finally:
        connection.close()  # the next query reconnects with the settings restored


def test_start_line_names_the_server_libpq_connected_to(monkeypatch):
    # It said "localhost:5432" whenever DATABASES had no HOST (the tutorial's settings).
    connection.ensure_connection()
    host, port = connection.connection.info.host, connection.connection.info.port
    name = connection.settings_dict["NAME"]
    said = where_libpq_goes(monkeypatch, host, port)
    if host.startswith("/"):
        assert said == f"{name} on socket {host}/.s.PGSQL.{port}"
    else:
        assert said == f"{name} on {host}:{port}"


def test_start_line_names_a_socket_as_a_socket(monkeypatch):
    connection.ensure_connection()
    port = connection.connection.info.port
    directory = "/var/run/postgresql"
    if not Path(directory, f".s.PGSQL.{port}").exists():
        pytest.skip(f"no server socket in {directory}")
    said = where_libpq_goes(monkeypatch, directory, port)
    assert said == f"{connection.settings_dict['NAME']} on socket {directory}/.s.PGSQL.{port}"


def test_verbosity_0_prints_only_errors_and_2_each_completion():
    enqueue_three()
    quiet = manage("runworker", "--burst", "-v", "0")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
    done = add.enqueue(2, 3)
    chatty = manage("runworker", "--burst", "-v", "2")
    assert f"job {done.pk} (testproject.demo.tasks.add) completed in " in chatty.stderr


def test_json_lines_carry_the_job_and_worker_fields():
    done, retried, discarded = enqueue_three()
    result = manage("runworker", "--burst", "-v", "2", "--log-format", "json")
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    by_job = {line.get("job_id"): line for line in lines if "job_id" in line}
    assert by_job[discarded.pk]["level"] == "warning"
    for job in (done, retried, discarded):
        line = by_job[job.pk]
        assert line["task"] == job.task and line["queue"] == "default"
        assert line["attempt"] == 1 and isinstance(line["worker_id"], int)


def test_runscheduler_speaks_by_default(tmp_path):
    result = manage("runscheduler", "--once")
    assert result.returncode == 0, result.stderr
    # --once closes with what it did, through the log as a worker's stop line; a
    # long-running scheduler prints its banner (tests/test_scheduler.py starts one).
    assert re.search(r" INFO runscheduler --once: (\d+ fired|nothing was due)", result.stderr)
    assert result.stdout == ""


def test_runscheduler_once_says_each_tick_once():
    """Each tick was said twice: by the scheduler's log line on stderr, and again in a
    summary on stdout. Now once, through the log (--log-format and the project's
    LOGGING apply to it, as to runworker's), then a closing line."""
    from django.utils import timezone

    from django_pgjobs.models import Schedule
    from tests.factories import ScheduleFactory

    schedule = ScheduleFactory(name="ticking-once")
    due = timezone.now().replace(second=0, microsecond=0)
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=due)
    result = manage("runscheduler", "--once", "--no-maintenance")
    assert result.returncode == 0, result.stderr
    said = result.stdout + result.stderr
    assert said.count("ticking-once") == 1, said
    job = Job.objects.get(task=schedule.task)
    assert re.search(rf" INFO schedule 'ticking-once': fired tick \S+ \S+ as job {job.pk}$",
                     result.stderr, re.M), said  # fmt: skip
    assert re.search(r" INFO runscheduler --once: 1 fired$", result.stderr, re.M), said
    assert result.stdout == ""


def test_runscheduler_once_says_nothing_at_verbosity_0():
    """Run from cron every minute, as its help says, it printed "fired 0 tick(s)" each
    time, which cron mails to the crontab's owner: -v 0 now leaves the errors alone."""
    result = manage("runscheduler", "--once", "-v", "0")
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


def test_a_project_that_configures_logging_keeps_it():
    add.enqueue(1, 1)
    env = {**os.environ, **conftest.test_database_env()}  # testproject's LOGGING
    result = subprocess.run(
        [sys.executable, "manage.py", "runworker", "--burst", "--log-format", "json"],
        cwd=conftest.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert " INFO django_pgjobs.worker: django-pgjobs " in result.stderr  # its own format


def test_processes_children_print_one_start_line_each(tmp_path):
    done = add.enqueue(1, 2)
    log = tmp_path / "stderr"
    env = {**os.environ, **conftest.test_database_env(), "PGJOBS_TEST_NO_LOGGING": "1"}
    with log.open("w") as err:
        supervisor = subprocess.Popen(
            [sys.executable, "manage.py", "runworker", "--processes", "2"],
            cwd=conftest.ROOT,
            env=env,
            stderr=err,
        )
        try:
            conftest.wait_until(lambda: log.read_text().count(" started: database ") >= 2, 60)
            conftest.wait_until(lambda: Job.objects.get(pk=done.pk).state == "completed", 30)
        finally:
            supervisor.send_signal(signal.SIGINT)
            try:
                code = supervisor.wait(timeout=60)
            except subprocess.TimeoutExpired:
                supervisor.kill()  # never leave a worker behind
                raise
    assert code == 0
    lines = log.read_text().splitlines()
    starts = [line for line in lines if " started: database " in line]
    assert len(starts) == 2  # one per child, none from the supervisor, none twice
    assert len({line.split(" pid ")[1] for line in starts}) == 2
    stops = [line for line in lines if re.search(r"worker \d+ stopped( after|:)", line)]
    assert len(stops) == 2 and any("1 completed" in line for line in stops)


def test_runworker_help_says_each_default_and_where_it_comes_from(settings):
    from django.core.management import load_command_class

    settings.PGJOBS = {**settings.PGJOBS, "WORKER_CONCURRENCY": 4, "POLL_INTERVAL": 0.5}
    parser = load_command_class("django_pgjobs", "runworker").create_parser("manage.py", "x")
    shown = " ".join(parser.format_help().split())  # argparse wraps where it likes
    assert "(default: PGJOBS['WORKER_CONCURRENCY'], here 4)" in shown
    assert "(default: PGJOBS['POLL_INTERVAL'], here 0.5)" in shown
    assert "(default 1; for jobs that compute, about one per core)" in shown
    (requirement,) = conftest.optional_dependencies()["prometheus"]
    assert f"pip install '{requirement}'" in shown  # not on PyPI: not django-pgjobs[...]


def test_runworker_with_a_mistyped_setting_says_the_check_not_a_traceback(settings, capsys):
    """Its help read PGJOBS['WORKER_CONCURRENCY'] while building the parser, before the
    system checks ran: a value of the wrong type was a traceback out of argparse set-up
    (runscheduler and pgjobs said pgjobs.E003 as a SystemCheckError)."""
    from django.core.management import load_command_class

    settings.PGJOBS = {**settings.PGJOBS, "WORKER_CONCURRENCY": "4", "POLL_INTERVAL": "1"}
    command = load_command_class("django_pgjobs", "runworker")
    shown = " ".join(command.create_parser("manage.py", "runworker").format_help().split())
    refused = "PGJOBS['WORKER_CONCURRENCY'] must be int, not str."
    assert f"(default: PGJOBS['WORKER_CONCURRENCY'], here '4', refused: {refused})" in shown
    with pytest.raises(SystemExit) as stopped:
        command.run_from_argv(["manage.py", "runworker", "--burst"])
    assert stopped.value.code == 1
    said = capsys.readouterr().err
    assert "SystemCheckError" in said and "Traceback" not in said
    assert "(pgjobs.E003) PGJOBS['WORKER_CONCURRENCY'] must be int, not str." in said


def _latest_pgjobs_migration() -> tuple[str, str]:
    """The latest pgjobs migration's name, and the one before it."""
    from django.db.migrations.loader import MigrationLoader

    graph = MigrationLoader(connection).graph
    (latest,) = [node for node in graph.leaf_nodes() if node[0] == "pgjobs"]
    (before,) = [parent for parent in graph.node_map[latest].parents if parent[0] == "pgjobs"]
    return latest[1], before[1]


def test_a_worker_on_a_database_missing_a_migration_warns_once_naming_it_and_runs():
    """A migration recorded as not applied (--fake: the schema stays), one whose change
    the worker doesn't use: it says so once, naming it, and runs."""
    from django.core.management import call_command

    latest, before = _latest_pgjobs_migration()
    call_command("migrate", "pgjobs", before, fake=True, verbosity=0)
    try:
        done = add.enqueue(1, 2)
        result = manage("runworker", "--burst")
    finally:
        call_command("migrate", "pgjobs", fake=True, verbosity=0)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "migration(s) not applied" in line]
    assert len(warned) == 1, result.stderr
    assert "WARNING 1 pgjobs migration(s) not applied to database " in warned[0]
    assert warned[0].endswith(
        f" ({latest}). Run `python manage.py migrate`: until then this worker may fail "
        "or miss what they add."
    )
    done.refresh_from_db()
    assert done.state == "completed"


def test_a_worker_on_a_database_missing_what_it_writes_stops_naming_the_migration():
    """0027 adds the column a worker's own row carries (``failing``): without it the
    worker can't record itself, and stops at start, saying which migration to run."""
    from django.core.management import call_command

    call_command("migrate", "pgjobs", "0026", verbosity=0)
    try:
        result = manage("runworker", "--burst")
    finally:
        call_command("migrate", "pgjobs", verbosity=0)
    assert result.returncode != 0
    assert "0027_workerprocess_failing" in result.stderr, result.stderr
    assert "Run `python manage.py migrate` first." in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_a_worker_warns_of_a_tasks_queue_no_queue_has_and_runs(caplog):
    from django.core.management import call_command

    from django_pgjobs import tasks

    tasks.task(name="tests.reports", queue="reports")(lambda: None)
    try:
        with caplog.at_level("WARNING", logger="django_pgjobs"), pytest.raises(SystemExit) as ended:
            call_command("runworker", "--burst")
    finally:
        tasks._registry.pop("tests.reports", None)
    assert ended.value.code == 0
    warned = [r.getMessage() for r in caplog.records if "pgjobs.W002" in r.getMessage()]
    assert warned == [
        "Task tests.reports names queue 'reports', which is neither in PGJOBS['QUEUES'] nor a "
        "queue of the admin (Background jobs → Queues): enqueueing raises UnknownQueue. "
        "Add 'reports': {} to PGJOBS['QUEUES'] (migrate, or a worker's start, creates its "
        "row), or create the queue in the admin (Background jobs → Queues). (pgjobs.W002)"
    ]
    assert [r.levelname for r in caplog.records if "pgjobs.W002" in r.getMessage()] == ["WARNING"]


def test_a_worker_whose_queue_declarations_can_not_be_compared_says_so_and_runs(
    caplog, monkeypatch
):
    # The comparison at start was wrapped in suppress(Exception): a failure there (the
    # database gone a moment, a permission) left the differences unsaid, and said nothing.
    from django.core.management import call_command
    from django.db import OperationalError

    from django_pgjobs.management.commands import runworker

    def refused(alias: str, warn: bool = False) -> list[str]:
        raise OperationalError('permission denied for table pgjobs_queue\nLINE 1: SELECT "')

    monkeypatch.setattr(runworker, "sync_from_settings", refused)
    done = add.enqueue(1, 2)
    with caplog.at_level("WARNING", logger="django_pgjobs"), pytest.raises(SystemExit) as ended:
        call_command("runworker", "--burst")
    assert ended.value.code == 0
    said = [r for r in caplog.records if "PGJOBS['QUEUES']" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in said] == [
        (
            "WARNING",
            "could not compare PGJOBS['QUEUES'] with the queues of database 'default' "
            '(OperationalError: permission denied for table pgjobs_queue\\nLINE 1: SELECT "); '
            "a declaration that differs from its row is not warned of. The worker runs on.",
        )
    ]
    done.refresh_from_db()
    assert done.state == "completed"


def test_a_worker_that_can_not_connect_says_so_and_not_that_it_runs_on():
    """A newcomer's worker with a wrong PORT warned "could not compare PGJOBS['QUEUES']
    ... The worker runs on." and stopped on the next line with "Can't connect to
    database": the warning said the opposite of what happened, and came first."""
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://root@127.0.0.1:1/pgjobs_nowhere",
        "PGJOBS_TEST_NO_LOGGING": "1",
    }
    env.pop("DIRECT_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "runworker"],
        cwd=conftest.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "CommandError: Can't connect to database 'default': " in result.stderr
    assert "runs on" not in result.stderr, result.stderr
    assert "could not compare" not in result.stderr, result.stderr


def test_a_worker_with_no_task_of_the_project_registered_warns_and_runs(caplog, monkeypatch):
    """A tasks module no app imports (tasks in jobs.py, an app left out of
    INSTALLED_APPS) left the worker silent, and each job it claimed then failed."""
    from django.core.management import call_command

    from django_pgjobs import tasks
    from django_pgjobs.connectors.tasks import call

    monkeypatch.setattr(tasks, "_registry", {call.name: call})  # pgjobs' own task only
    with caplog.at_level("WARNING", logger="django_pgjobs"), pytest.raises(SystemExit) as ended:
        call_command("runworker", "--burst")
    assert ended.value.code == 0
    warned = [r for r in caplog.records if "no task" in r.getMessage()]
    assert [r.levelname for r in warned] == ["WARNING"]
    assert warned[0].getMessage() == (
        "no task is registered in this worker: each job it claims will fail with "
        "UnknownTask. Define tasks with @task in the tasks.py module of an app in "
        "INSTALLED_APPS, or list their modules in PGJOBS['TASK_MODULES']."
    )


@pytest.mark.parametrize(
    "option, value, said",
    [
        ("--concurrency", "0", "--concurrency must be between 1 and 10000, not 0"),
        ("--prefetch", "10001", '--prefetch must be "auto" or 0 to 10,000 jobs, not 10001'),
        ("--poll-interval", "0", "--poll-interval must be a number of seconds above 0"),
    ],
)
def test_runworker_refuses_a_number_out_of_range_by_its_option_before_it_starts(
    option, value, said, caplog
):
    """``runworker --concurrency 0`` printed the DEBUG line and the tasks registered, as
    for a worker starting, then "concurrency must be between 1 and 10000", naming no
    option of the command."""
    from django.core.management import CommandError, call_command

    with caplog.at_level("INFO", logger="django_pgjobs"), pytest.raises(CommandError) as refused:
        call_command("runworker", option, value)
    assert str(refused.value).startswith(said), refused.value
    assert not [r.getMessage() for r in caplog.records]


def test_a_worker_with_tasks_registered_does_not_warn_of_none(caplog):
    from django.core.management import call_command

    with caplog.at_level("WARNING", logger="django_pgjobs"), pytest.raises(SystemExit):
        call_command("runworker", "--burst")
    assert not [r for r in caplog.records if "no task is registered" in r.getMessage()]


def test_a_stop_summary_counts_a_snooze_as_no_attempt():
    """A job snoozing six times read "stopped after 6 attempts: 6 scheduled", where a
    snooze uses no attempt and the job had never failed."""
    done = add.enqueue(1, 2)
    Job.enqueue("tests.tasks_for_flow.snooze_times", kwargs={"times": 2, "seconds": 30})
    result = manage("runworker", "--burst")
    assert result.returncode == 0, result.stderr
    stop = next(line for line in result.stderr.splitlines() if " stopped" in line)
    assert stop.endswith(" stopped after 1 attempt: 1 completed, 1 snoozed"), stop
    done.refresh_from_db()
    assert done.state == "completed"


def test_a_worker_with_debug_on_keeps_no_query_log_growing(worker_process, wait):
    """With DEBUG = True (startproject's default) each Django connection logs every
    statement it runs, up to 9,000, and only a request empties the log (Django's
    reset_queries): each thread of a worker, which serves none, kept its last 9,000."""
    Job.enqueue_many(
        [{"task": "testproject.demo.tasks.record", "args": [f"q-{n}"]} for n in range(300)]
        # An async task's ORM calls run on its job thread's ORM thread (leftovers.py).
        + [{"task": "tests.tasks_for_tests.async_record", "args": [f"a-{n}"]} for n in range(100)]
    )
    process = worker_process("--concurrency", "2", env={"DEBUG": "True"})
    wait(lambda: not Job.objects.exclude(state="completed").exists(), timeout=60)
    probe = Job.enqueue("tests.tasks_for_tests.most_queries_logged")
    wait(lambda: Job.objects.get(pk=probe.pk).state == "completed", timeout=30)
    most = Job.objects.get(pk=probe.pk).result
    assert process.stop() == 0, process.output()
    assert most < 20, f"a connection of the worker holds {most} logged queries"
    [said] = [line for line in process.output().splitlines() if "DEBUG" in line]
    assert said.endswith(
        "INFO django_pgjobs.worker: settings.DEBUG is on: Django logs every query "
        "(connection.queries); this process empties each thread's log at every job or "
        "pass, as Django does at every request. Turn DEBUG off in production."
    )


def test_a_scheduler_with_debug_on_keeps_no_query_log_growing(settings):
    """As a worker's threads: each pass of a scheduler's loop added its statements to
    its thread's query log, up to 9,000."""
    from django_pgjobs.scheduler import Scheduler

    settings.DEBUG = True
    scheduler = Scheduler(routines=[])
    passes = []

    def sleep_until(when):
        passes.append(len(connection.queries_log))
        if len(passes) == 50:
            scheduler.request_stop()

    scheduler.start()
    try:
        scheduler.loop(sleep_until)
    finally:
        scheduler.shutdown()
    assert max(passes) < 20, passes  # it grew by 5 statements a pass


def test_runscheduler_says_a_signal_sent_twice_at_once_once(worker_process, wait):
    """coreutils ``timeout`` sends its SIGTERM to the command, then to its whole process
    group: the scheduler said "received SIGTERM" twice when the second came after its
    handler had run (a loaded machine), where the worker counts them as one."""
    process = worker_process("--no-maintenance", command="runscheduler", env={"DEBUG": "True"})
    wait(lambda: " started: " in process.output(), timeout=30)
    process.proc.send_signal(signal.SIGTERM)
    wait(lambda: "received SIGTERM" in process.output(), timeout=10)
    process.proc.send_signal(signal.SIGTERM)  # within SAME_SIGNAL_WITHIN of the first
    assert process.wait(30) == 0, process.output()
    said = [line for line in process.output().splitlines() if "received" in line]
    assert len(said) == 1, process.output()
    assert re.search(r"INFO django_pgjobs\.scheduler: scheduler \d+: received SIGTERM$", said[0])
    assert process.output().count("settings.DEBUG is on: ") == 1  # as a worker says it


def test_each_worker_process_names_itself_when_it_hears_a_stop(worker_process, wait):
    """Under --processes every child said a bare "received SIGTERM", as alike as the
    lines of one process said twice; its stop line names its worker, so does this."""
    process = worker_process("--processes", "2")
    wait(lambda: process.output().count(" started: ") == 2, timeout=60)
    assert process.stop(signal.SIGTERM) == 0, process.output()
    said = [line for line in process.output().splitlines() if "received SIGTERM" in line]
    ids = sorted(re.findall(r"worker (\d+) started: ", process.output()))
    assert sorted(re.search(r"worker (\d+): received SIGTERM$", line)[1] for line in said) == ids


def test_a_stopping_worker_says_what_it_waits_for_before_it_waits(worker_process, wait):
    """Ctrl-C with a job running printed "received SIGINT", then nothing for up to
    SHUTDOWN_TIMEOUT (30 s by default): a newcomer could not tell a worker finishing its
    jobs from one that hung, nor that a second Ctrl-C hands them back at once."""
    job = sleep.enqueue(60)
    process = worker_process(env={"PGJOBS_SHUTDOWN_TIMEOUT": "30"})
    wait(lambda: Job.objects.get(pk=job.pk).state == "executing", timeout=30)
    process.proc.send_signal(signal.SIGINT)
    wait(lambda: "stopping" in process.output(), timeout=10)
    line = next(line for line in process.output().splitlines() if "stopping" in line)
    assert re.search(
        r"INFO django_pgjobs\.worker: worker \d+ stopping: waiting up to 30s for 1 running "
        r"job\(s\) to finish, then handing them back; stop it again \(Ctrl-C, SIGTERM\) to "
        r"hand them back now$",
        line,
    ), line
    time.sleep(stopsignals.SAME_SIGNAL_WITHIN + 0.5)  # sooner, it is the same request
    process.proc.send_signal(signal.SIGINT)  # a second request: hand back now
    assert process.wait(30) == 0, process.output()
    # The job handed back is named as every job line names it, and the stop line counts
    # it: it said "job 7 handed back", then "worker 3 stopped: no jobs".
    lines = process.output().splitlines()
    assert any(
        line.endswith(
            f"WARNING django_pgjobs.worker: job {job.pk} (testproject.demo.tasks.sleep) "
            "handed back (not counted as an attempt)"
        )
        for line in lines
    ), process.output()
    stop = next(line for line in lines if " stopped" in line)
    assert re.search(r"worker \d+ stopped: 1 handed back$", stop), stop


def test_a_worker_stopping_with_no_job_running_says_no_more_than_it_stopped(worker_process):
    process = worker_process()
    assert process.stop(signal.SIGINT) == 0, process.output()
    assert "stopping" not in process.output(), process.output()


@pytest.mark.skipif(not shutil.which("timeout"), reason="coreutils timeout is not installed")
def test_runscheduler_under_timeout_stops_saying_so_once(tmp_path):
    """The command the README's reader types to try it: ``timeout 5 manage.py
    runscheduler``. Its exit status is timeout's 124; the scheduler's own is 0."""
    env = {**os.environ, **conftest.test_database_env(), "PGJOBS_TEST_NO_LOGGING": "1"}
    result = subprocess.run(
        ["timeout", "8", sys.executable, "manage.py", "runscheduler", "--no-maintenance"],
        cwd=conftest.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 124, result.stderr  # timed out, as asked
    assert " started: " in result.stderr, result.stderr
    assert result.stderr.count("received SIGTERM") == 1, result.stderr
    assert len(re.findall(r"scheduler \d+ stopped: ", result.stderr)) == 1, result.stderr


def test_runworker_says_at_start_which_modules_its_tasks_come_from():
    """A newcomer whose task lives in shop/jobs.py (imported by a view, so enqueue works)
    saw nothing at start that told the worker had not imported it."""
    from django_pgjobs import tasks

    demo = [name for name in tasks.registered_tasks() if name.startswith("testproject.demo.tasks.")]
    result = manage("runworker", "--burst")
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stderr.splitlines() if " task(s) registered" in line]
    assert re.search(r" INFO \d+ task\(s\) registered, from ", line), line
    assert f"testproject.demo.tasks ({len(demo)})" in line
    assert line.endswith(
        "; a worker imports the tasks.py module of each installed app and the modules "
        "of PGJOBS['TASK_MODULES']."
    )
    assert "django_pgjobs.connectors" not in line  # pgjobs' own task: not the project's


def test_a_job_of_a_task_module_the_worker_never_imported_says_so_by_name(monkeypatch):
    """Its UnknownTask said "the task's module is not imported at startup": which
    module, and what to do with it, were left to guess."""
    from django_pgjobs import tasks

    # Registered in this test only, as a view importing shop/jobs.py would register it.
    monkeypatch.setattr(tasks, "_registry", dict(tasks._registry))
    from tests.jobs_no_worker_imports import forgotten

    job = forgotten.enqueue(1)
    result = manage("runworker", "--burst")
    assert result.returncode == 0, result.stderr
    job.refresh_from_db()
    error = job.errors[0]["error"]
    assert (
        "or its module 'tests.jobs_no_worker_imports' is not imported in this worker: a "
        "worker imports the tasks.py module of each installed app and the modules of "
        "PGJOBS['TASK_MODULES'] (list it there): retried, as a worker running newer code "
        "may run it"
    ) in error, error
    assert "'tests.jobs_no_worker_imports' is not imported in this worker" in result.stderr


def test_a_job_of_a_task_its_imported_module_lacks_does_not_blame_the_import():
    from django_pgjobs.exceptions import UnknownTask

    said = str(UnknownTask.in_worker("testproject.demo.tasks.gone", retried=False))
    assert (
        "or its module 'testproject.demo.tasks', imported in this worker, has no function "
        "of that name decorated with @task: its attempts are used up"
    ) in said, said
    bare = str(UnknownTask.in_worker("gone", retried=False))
    assert "the task's module is not imported at startup" in bare
