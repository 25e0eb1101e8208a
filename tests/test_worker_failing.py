"""A worker's row says what of it keeps failing (its loop's passes, a queue's claims):
its heartbeat writes ``WorkerProcess.failing``, and ``pgjobs health``, ``pgjobs stats``
and the admin's Worker processes pages show it, whatever a row written by SQL holds
there."""

from __future__ import annotations

import json
import logging
import re

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.urls import reverse

from django_pgjobs import Job, clocks, failing, health, inline, probes, stats
from django_pgjobs.models import WorkerProcess
from django_pgjobs.worker import Worker
from tests.conftest import wait_until
from tests.factories import WorkerProcessFactory
from tests.test_cli import as_json, pgjobs
from tests.test_loop_errors import queue_failures, queue_trigger  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def failing_of(worker: Worker):
    return WorkerProcess.objects.filter(pk=worker.record.pk).values_list("failing", flat=True)[0]


def worker_check() -> health.Check:
    host = WorkerProcess.objects.values_list("host", flat=True).first()
    return health.check_workers(clocks.database_now("default"), host)


@pytest.mark.slow
def test_the_heartbeat_says_a_queue_whose_claims_keep_failing_and_health_fails(
    threaded_worker,
    wait,
    caplog,
    queue_trigger,  # noqa: F811
    monkeypatch,
    admin_client,
):
    caplog.set_level(logging.DEBUG, logger="django_pgjobs.worker")
    queue_trigger("mail")
    worker = threaded_worker(queues=["mail", "default"], poll_interval=0.2)
    wait(lambda: worker.heartbeat_ok_at is not None, timeout=10)
    assert failing_of(worker) is None  # nothing fails: NULL
    odd = Job.enqueue("testproject.demo.tasks.add", args=["a secret", "b"], queue="mail")
    worker.wakeup.set()
    wait(lambda: queue_failures(caplog, "mail"), timeout=20)
    value = wait(lambda: failing_of(worker), timeout=10)
    # One entry, the queue's: since when (UTC), how many failures, the error's class.
    (entry,) = value
    assert set(entry) == {"queue", "since", "failures", "error"}
    assert entry["queue"] == "mail" and entry["error"] == "DataError"
    assert isinstance(entry["failures"], int) and entry["failures"] >= 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["since"]), entry["since"]
    assert "secret" not in json.dumps(value)  # never the error's text: it quotes the row
    # Under FAILING_AFTER, health doesn't fail on it.
    assert worker_check().ok
    monkeypatch.setattr(probes, "FAILING_AFTER", 1.0)
    check = wait(lambda: (c := worker_check()) and not c.ok and c, timeout=20)
    host = worker.record.host
    pattern = (
        rf"worker {worker.record.pk} on {re.escape(host)}: queue 'mail' claims failing since "
        r"\d\d:\d\d:\d\d UTC \(\d+ failures?, DataError\); see its log"
    )
    assert re.fullmatch(pattern, check.detail), check.detail
    code, out, _ = pgjobs("health", "--host", host, "--max-scheduler-lag", "off")
    assert code == 1 and "queue 'mail' claims failing since" in out
    assert "secret" not in out
    # The admin's list and the worker's page say it.
    listed = admin_client.get(reverse("admin:pgjobs_workerprocess_changelist")).content.decode()
    assert "queue &#x27;mail&#x27; claims failing since" in listed
    page = admin_client.get(reverse("admin:pgjobs_workerprocess_change", args=[worker.record.pk]))
    assert "queue &#x27;mail&#x27; claims failing since" in page.content.decode()
    # pgjobs stats says it too.
    (row,) = as_json("stats")["workers"]
    assert [f["queue"] for f in row["failing"]] == ["mail"]
    # The row gone, its claims pass again: NULL, and healthy.
    Job.objects.filter(pk=odd.pk).delete()
    wait(lambda: failing_of(worker) is None, timeout=20)
    assert worker_check().ok


@pytest.mark.slow
def test_the_heartbeat_says_a_loop_whose_passes_keep_failing(threaded_worker, wait, monkeypatch):
    worker = threaded_worker(poll_interval=0.2)

    def broken(self: Worker) -> None:
        raise TypeError("a bug of ours")

    with monkeypatch.context() as patched:
        patched.setattr(Worker, "enforce_timeouts", broken)
        worker.wakeup.set()
        value = wait(lambda: failing_of(worker), timeout=20)
        assert value[0]["queue"] is None and value[0]["error"] == "TypeError"
        monkeypatch.setattr(probes, "FAILING_AFTER", 0.5)
        check = wait(lambda: (c := worker_check()) and not c.ok and c, timeout=20)
        assert ": its loop's passes failing since " in check.detail
        assert "a bug of ours" not in check.detail
    worker.wakeup.set()
    wait(lambda: failing_of(worker) is None, timeout=20)


def sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_a_stale_worker_is_said_stale_not_failing():
    row = WorkerProcessFactory()
    sql(
        "UPDATE pgjobs_workerprocess SET heartbeat_at = now() - interval '1 hour',"
        ' failing = \'[{"queue": "mail", "since": "2020-01-01T00:00:00Z",'
        ' "failures": 3, "error": "DataError"}]\' WHERE id = %s',
        [row.pk],
    )
    check = worker_check()
    assert not check.ok and "last heartbeat" in check.detail and "failing" not in check.detail


def test_a_failure_younger_than_failing_after_is_healthy():
    row = WorkerProcessFactory()
    sql(
        "UPDATE pgjobs_workerprocess SET failing = jsonb_build_array(jsonb_build_object("
        "'queue', 'mail', 'since', to_char(now() AT TIME ZONE 'UTC',"
        " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'failures', 1, 'error', 'DataError')) WHERE id = %s",
        [row.pk],
    )
    assert worker_check().ok


def test_several_failing_are_said_oldest_first_and_counted_past_a_few():
    row = WorkerProcessFactory()
    entries = [
        {"queue": f"q{n}", "since": f"2020-01-01T00:00:{59 - n:02d}Z", "failures": n, "error": "E"}
        for n in range(10)
    ]
    sql("UPDATE pgjobs_workerprocess SET failing = %s WHERE id = %s", [json.dumps(entries), row.pk])
    check = worker_check()
    assert not check.ok
    assert check.detail.index("queue 'q9'") < check.detail.index("queue 'q8'")
    assert "and 7 more" in check.detail and "queue 'q0'" not in check.detail


HUGE = (
    "(SELECT jsonb_agg(jsonb_build_object('queue', repeat('q', 1000), 'since',"
    " '2020-01-01T00:00:00Z', 'failures', 1, 'error', 'E')) FROM generate_series(1, 3000))"
)

#: What a row written by SQL, or by another version, may hold in ``failing``.
ODD_VALUES = {
    "json null": "'null'",
    "text": "'\"failing\"'",
    "number": "'42'",
    "object": '\'{"queue": "mail"}\'',
    "odd entries": "'[1, \"x\", null, [], {}]'",
    "wrong types": '\'[{"queue": 5, "since": 12, "failures": "many", "error": {"a": 1}}]\'',
    "odd numbers": '\'[{"queue": "a", "since": "2020-01-01T00:00:00Z", "failures": 1e400,'
    ' "error": "E"}, {"queue": "b", "since": "2020-01-01T00:00:00Z", "failures": -1,'
    ' "error": "E"}, {"queue": "c", "since": "2020-01-01T00:00:00Z",'
    ' "failures": true, "error": "E"}]\'',
    "odd times": '\'[{"queue": "a", "since": "not a time"}, {"queue": "b", "since":'
    ' "0001-01-01T00:00:00+00:00"}, {"queue": "c", "since": "9999-12-31T23:59:59+00:00"},'
    ' {"queue": "d", "since": "2020-01-01T00:00:00"}, {"queue": "e", "since":'
    ' "2020-01-01T00:00:00+14:00"}]\'',
    "markup and escapes": '\'[{"queue": "<b>m</b>\\nail\\u001b[31m", "since":'
    ' "2020-01-01T00:00:00Z", "failures": 2, "error": "<script>x</script>\\r"}]\'',
    "long names": "jsonb_build_array(jsonb_build_object('queue', repeat('q', 20000), 'since',"
    " '2020-01-01T00:00:00Z', 'failures', 1, 'error', repeat('E', 20000)))",
    "many entries": "(SELECT jsonb_agg(jsonb_build_object('queue', 'q' || n, 'since',"
    " '2020-01-01T00:00:00Z', 'failures', n, 'error', 'E')) FROM generate_series(1, 90) n)",
    "huge": HUGE,
    "deep": "(repeat('[', 5000) || repeat(']', 5000))::jsonb",
    "deep entry": "('[{\"queue\": ' || repeat('[', 5000) || repeat(']', 5000) || '}]')::jsonb",
}


@pytest.mark.parametrize("value", ODD_VALUES.values(), ids=ODD_VALUES.keys())
def test_an_odd_failing_value_is_shown_as_far_as_it_can_be(value, admin_client):
    row = WorkerProcessFactory()
    sql(f"UPDATE pgjobs_workerprocess SET failing = {value} WHERE id = %s", [row.pk])
    check = worker_check()
    assert len(check.detail) < 2_000
    assert "\n" not in check.detail and "\x1b" not in check.detail
    code, _, err = pgjobs("health", "--host", row.host, "--max-scheduler-lag", "off")
    assert code in (0, 1) and "Traceback" not in err
    listed = admin_client.get(reverse("admin:pgjobs_workerprocess_changelist"))
    assert listed.status_code == 200
    assert "<script>" not in listed.content.decode()
    assert len(listed.content) < 200_000
    page = admin_client.get(reverse("admin:pgjobs_workerprocess_change", args=[row.pk]))
    assert page.status_code == 200 and "<script>" not in page.content.decode()
    assert len(page.content) < 200_000
    (listed_row,) = stats.workers()
    # Plain values, whatever the column held.
    assert len(json.dumps(listed_row["failing"], cls=DjangoJSONEncoder)) < 20_000
    code, _, err = pgjobs("stats")
    assert code == 0, err
    assert as_json("stats")["workers"]


def test_a_value_too_large_to_list_is_said_so_not_read():
    row = WorkerProcessFactory()
    sql(f"UPDATE pgjobs_workerprocess SET failing = {HUGE} WHERE id = %s", [row.pk])
    (listed_row,) = stats.workers()
    assert listed_row["failing"] is None and "failing" in listed_row["not_shown"]
    # No worker writes that much (failing.MOST_WRITTEN entries): not read, not said.
    assert worker_check().ok


def test_read_keeps_what_it_can_of_each_entry():
    read = failing.read(
        [
            {"queue": "mail", "since": "2020-01-01T00:00:00Z", "failures": 3, "error": "E"},
            {"queue": None, "since": "nonsense", "failures": "3", "error": 5},
            "junk",
        ]
    )
    assert [(f.queue, f.failures, f.error) for f in read.entries] == [
        ("mail", 3, "E"),
        (None, None, None),
    ]
    assert read.entries[0].since is not None and read.entries[1].since is None


def test_the_inline_runners_heartbeat_writes_only_what_it_tracks(settings):
    """Its heartbeat, not failing nor clock_skew: it tracks no failures (any error ends
    the call, raised to its caller) and measures no skew; it wrote NULL in both."""
    settings.PGJOBS = {**settings.PGJOBS, "HEARTBEAT_INTERVAL": 0.05}
    row = WorkerProcessFactory(clock_skew=1.5)
    with connection.cursor() as cursor:  # as another writer (SQL) may have left it
        cursor.execute(
            "UPDATE pgjobs_workerprocess SET failing = '[\"x\"]',"
            " heartbeat_at = now() - interval '1 minute' WHERE id = %s",
            [row.pk],
        )
    before = WorkerProcess.objects.get(pk=row.pk).heartbeat_at
    watchdog = inline._Watchdog(row.pk, "default")
    watchdog.start()
    try:
        wait_until(lambda: WorkerProcess.objects.get(pk=row.pk).heartbeat_at > before)
    finally:
        watchdog.stop()
    written = WorkerProcess.objects.filter(pk=row.pk).values_list("failing", "clock_skew")
    assert list(written) == [(["x"], 1.5)]
