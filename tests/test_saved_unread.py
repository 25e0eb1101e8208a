"""``save()`` of a row some of whose values were not read writes none of them: a job
read as the API and the admin show one (``shown.bounded``: values over the limit None,
its errors the first and latest ``KEPT``), a duplicate's holder (``loaded.holder``:
large values deferred), a claimed job (values over the limit left out), a worker
process read as the admin reads one. Each held a stand-in (None, ``{}``, a cut list)
that a plain ``save()`` wrote over the stored value. A value not read is left as
stored; a save that would write one (named in ``update_fields``, changed since, or an
insert) is refused and writes nothing.
"""

from __future__ import annotations

import pytest
from django.db import DatabaseError, transaction
from django.urls import reverse

from django_pgjobs import shown
from django_pgjobs.models import Job, WorkerProcess
from tests.test_hardening_rows import insert_job, sql

pytestmark = pytest.mark.django_db

PAYLOAD = 1_000

#: 25 error records, more than kept_errors.KEPT (20): a reader gets 20 of them.
MANY_ERRORS = (
    "(SELECT jsonb_agg(jsonb_build_object('attempt', n, 'error', 'e' || n))"
    " FROM generate_series(1, 25) AS n)"
)
#: Stored in over a claim's INLINE_BYTES (8 KB) and over the limit the tests set
#: (md5s: repeat() compresses to little).
LARGE_ARGS = "(SELECT jsonb_agg(md5(n::text)) FROM generate_series(1, 2000) AS n)"


@pytest.fixture(autouse=True)
def small_limit(settings) -> None:
    settings.PGJOBS = {**settings.PGJOBS, "MAX_PAYLOAD_BYTES": PAYLOAD}


def stored(job_id: int) -> tuple:
    """What the row holds, as text, compared whole."""
    return sql(
        "SELECT args::text, kwargs::text, result::text, meta::text, errors::text, priority"
        " FROM pgjobs_job WHERE id = %s",
        [job_id],
    )[0]


def large_job() -> int:
    return insert_job(
        state="'discarded'",
        finished_at="now()",
        args="jsonb_build_array(repeat('a', 5000))",
        kwargs="jsonb_build_object('k', repeat('k', 5000))",
        result="to_jsonb(repeat('r', 5000))",
        meta="jsonb_build_object('pipeline', repeat('m', 5000))",
        errors=MANY_ERRORS,
    )


def shown_job(job_id: int) -> Job:
    job = shown.read(shown.bounded(Job.objects.all()).get(pk=job_id))
    assert set(job.not_shown) == {"args", "kwargs", "result", "meta"}
    assert len(job.errors) == 20 and job.errors_not_kept == 5
    return job


def test_a_job_read_as_shown_saves_its_read_fields_and_keeps_the_rest_as_stored():
    job_id = large_job()
    before = stored(job_id)
    job = shown_job(job_id)
    job.priority = 7
    job.save()
    after = stored(job_id)
    assert after[:5] == before[:5]  # args, kwargs, result, meta, all 25 errors
    assert after[5] == 7


def test_a_job_read_as_shown_is_saved_with_update_fields_of_read_ones():
    job_id = large_job()
    before = stored(job_id)
    job = shown_job(job_id)
    job.priority = 3
    job.save(update_fields=["priority"])
    assert stored(job_id) == (*before[:5], 3)


@pytest.mark.parametrize("field", ["args", "kwargs", "result", "meta", "errors"])
def test_a_save_naming_a_field_not_read_is_refused_and_writes_nothing(field):
    job_id = large_job()
    before = stored(job_id)
    job = shown_job(job_id)
    job.priority = 9
    with pytest.raises(ValueError, match=rf"{field}.*not read"):
        job.save(update_fields=["priority", field])
    assert stored(job_id) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [("result", {"new": 1}), ("args", [1]), ("meta", {"x": 1}), ("errors", [])],
)
def test_a_value_not_read_and_changed_since_is_refused_not_dropped(field, value):
    """Left out, the caller's new value would be lost without a word."""
    job_id = large_job()
    before = stored(job_id)
    job = shown_job(job_id)
    setattr(job, field, value)
    with pytest.raises(ValueError, match=rf"{field}.*not read"):
        job.save()
    assert stored(job_id) == before


def test_meta_changed_in_place_is_refused_too():
    job_id = large_job()
    job = shown_job(job_id)
    job.meta["x"] = 1  # meta not shown reads as {}
    with pytest.raises(ValueError, match="meta"):
        job.save()


def test_a_job_read_again_whole_saves_what_is_changed():
    job_id = large_job()
    job = shown_job(job_id)
    job.refresh_from_db()
    assert len(job.errors) == 25 and job.result == "r" * 5000
    job.result = {"new": 1}
    job.save()
    after = stored(job_id)
    assert after[2] == '{"new": 1}' and after[0] == '["' + "a" * 5000 + '"]'


def test_a_job_read_as_shown_is_not_inserted_as_a_copy():
    job_id = large_job()
    job = shown_job(job_id)
    job.pk = None
    with pytest.raises(ValueError, match="not read"):
        job.save()
    assert Job.objects.count() == 1


def test_errors_read_as_kept_are_never_written_back_even_when_all_else_is_shown():
    job_id = insert_job(state="'discarded'", finished_at="now()", errors=MANY_ERRORS)
    job = shown.read(shown.bounded(Job.objects.all()).get(pk=job_id))
    assert job.not_shown == {}
    job.priority = 2
    job.save()
    assert sql("SELECT jsonb_array_length(errors) FROM pgjobs_job WHERE id = %s", [job_id]) == [
        (25,)
    ]


def test_a_duplicates_holder_saved_keeps_its_deferred_values():
    holder = insert_job(unique_key="'nightly'", args=LARGE_ARGS)
    before = stored(holder)
    job = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], unique_key="nightly")
    assert job.pk == holder and "args" in job.get_deferred_fields()
    job.priority = 4
    job.save()
    assert stored(holder) == (*before[:5], 4)


def test_a_holder_read_again_after_it_is_gone_is_not_saved_back_empty():
    """``read_again`` of a holder deleted meanwhile stands in ``[]`` for its args: a
    plain save() inserted the job again with them."""
    holder = insert_job(unique_key="'nightly'", args=LARGE_ARGS)
    job = Job.enqueue("testproject.demo.tasks.add", args=[1, 2], unique_key="nightly")
    sql("DELETE FROM pgjobs_job WHERE id = %s", [holder])
    again = shown.read_again(job)
    assert again.args == [] and "args" in again.not_shown
    with pytest.raises(DatabaseError), transaction.atomic():  # no row to update
        again.save()
    assert Job.objects.count() == 0


def test_a_claimed_job_saved_keeps_the_values_the_claim_left_out(worker):
    """A claim leaves out errors and a result over the limit (``loaded.left_out``): a
    task that saved its own job (``current_job().job``) wrote ``[]`` and None over them."""
    job_id = insert_job(result=LARGE_ARGS)
    record = (
        "jsonb_build_object('attempt', n, 'error',"
        " (SELECT string_agg(md5(n::text || m), '') FROM generate_series(1, 10) AS m))"
    )
    sql(
        f"UPDATE pgjobs_job SET errors = (SELECT jsonb_agg({record}) FROM"
        " generate_series(1, 19) AS n) WHERE id = %s",
        [job_id],
    )
    before = stored(job_id)
    (claimed,) = worker.claim(10)
    assert claimed.result is None and claimed.errors == []  # over the limit: left out
    claimed.priority = 5
    claimed.save()
    after = stored(job_id)
    assert after[2] == before[2] and after[4] == before[4] and after[5] == 5


# -- worker processes, as the admin reads them ------------------------------------------


def large_worker() -> WorkerProcess:
    worker = WorkerProcess.objects.create(host="w", pid=1)
    sql(
        "UPDATE pgjobs_workerprocess SET queues = (SELECT jsonb_agg(repeat('q', 50) || n)"
        " FROM generate_series(1, 400) AS n) WHERE id = %s",
        [worker.pk],
    )
    return worker


def test_a_worker_process_read_within_the_limit_saved_keeps_its_queues():
    worker = large_worker()
    rows = shown.within(WorkerProcess.objects.all(), ["queues"])
    row = rows.get(pk=worker.pk)
    shown.unpack(row, ["queues"])
    assert row.queues is None and "queues" in row.not_shown
    row.concurrency = 3
    row.save()
    assert sql(
        "SELECT jsonb_array_length(queues), concurrency FROM pgjobs_workerprocess WHERE id = %s",
        [worker.pk],
    ) == [(400, 3)]


def test_a_post_to_a_worker_process_page_writes_nothing_over_the_workers_row(admin_client):
    """The page is read-only (the row is the worker's to write): a POST saved the row
    as read, its queues None and its heartbeat and stop request as they were then."""
    worker = large_worker()
    url = reverse("admin:pgjobs_workerprocess_change", args=[worker.pk])
    sql(
        "UPDATE pgjobs_workerprocess SET stop_requested = true, heartbeat_at = now() WHERE id = %s",
        [worker.pk],
    )
    before = sql("SELECT * FROM pgjobs_workerprocess WHERE id = %s", [worker.pk])
    answer = admin_client.post(url, {})
    assert answer.status_code in (403, 405)
    assert sql("SELECT * FROM pgjobs_workerprocess WHERE id = %s", [worker.pk]) == before
