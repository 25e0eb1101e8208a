"""One row version per job? A drain whose jobs are locked, not claimed, priced per job.

    .venv/bin/python bench/held_lock_cost.py [--jobs 20000] [--batch 500] [--held 1000]
        [--rounds 3] [--modes today,held,held-nokey,held-notrigger]
    .venv/bin/python bench/held_lock_cost.py --held 0 --modes today,held,held-nolock

A measurement for a design question (issue 18), not a way to run: on a scratch
database made as bench/drain_cost.py makes one, ``jobs`` no-op jobs are drained
``batch`` at a time, the modes taking turns round by round:

- ``today``: sql/claim.sql then sql/finish.sql, each in its own transaction (as
  drain_cost.py), ``held`` jobs left executing throughout;
- ``held``: one transaction per batch: the due jobs selected ``FOR UPDATE SKIP LOCKED``
  (claim.sql's selection, whole rows), then one UPDATE available -> completed of them
  all (finish.sql's columns, plus the attempt claim.sql counts; no lease), then COMMIT.
  ``held`` other jobs stay locked by another session, as other workers' running
  batches would be: available, at the head of the claim index, skipped by every
  select; that session commits and locks them again every ``turnover`` batches, so
  the oldest open transaction is never older than that (a real worker's is as old
  as its batch's run time);
- ``held-nokey``: the same with ``FOR NO KEY UPDATE`` (what the UPDATE itself takes);
- ``held-nolock``: the same with no lock at all: the price of the lock by difference
  (unsafe with two workers; one session here, with ``--held 0``: unlocked, the
  select would return the other session's jobs);
- ``held-notrigger``: ``held`` with the ``pgjobs_job_transition`` trigger dropped for
  the round: what the state machine and events trigger cost on that path.

The scratch database's transition trigger is relaxed to let available -> completed
through (the design would need that move; its one-target fast path as before, for
every mode). The Python side is the worker's own: ``db.fetch_jobs`` and
``transitions.finish``, only their SQL swapped for the held modes.

Per job: the backend's CPU (/proc/<pid>/schedstat) and this process's, select/claim
and outcome apart; the WAL this database's records took (pg_walinspect over the
drain's LSN range, other databases' records and the locking session's left out;
full-page images apart, after a CHECKPOINT); updates and HOT updates; the load.
bench/README.md ("One row version per job?") reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH / "runners"), str(BENCH)]

from common import checkpoint, database_name, drop_database, recreate_database, with_database  # noqa: E402
from drain_cost import DEFAULT_URL, backend_cpu_ns, job_updates, scratch  # noqa: E402

CLAIMABLE = ["available", "scheduled", "retryable"]

#: claim.sql's selection, whole rows, locked (``{lock}``) rather than claimed. The
#: publisher setting and ``previous`` keep the statement's shape a worker's.
HELD_SELECT = """
SELECT job.*, job.state AS previous
FROM pgjobs_job AS job
WHERE queue = %(queue)s
  AND state IN ('available', 'scheduled', 'retryable')
  AND run_at <= %(now)s
  AND state = ANY(%(states)s)
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
{lock}
"""

#: finish.sql for jobs this transaction holds locked: matched by id and a claimable
#: state rather than by lease; the attempt counted and stamped as claim.sql does
#: (attempted_at: the transaction's start, that is the select's).
HELD_FINISH = """
WITH publisher AS (
    SELECT set_config('pgjobs.publisher', statement_timestamp()::text, true)
), outcome AS MATERIALIZED (
    SELECT *
    FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS outcome (
        id bigint,
        state text,
        result jsonb,
        error jsonb,
        run_at timestamptz,
        finished_at timestamptz
    )
)
UPDATE pgjobs_job AS job
SET state = outcome.state,
    result = CASE WHEN outcome.state = 'completed' THEN outcome.result ELSE job.result END,
    errors = CASE
        WHEN outcome.error IS NULL THEN job.errors
        ELSE job.errors || jsonb_build_array(outcome.error)
    END,
    run_at = coalesce(outcome.run_at, job.run_at),
    finished_at = outcome.finished_at,
    attempt = least(job.attempt, 2147483646) + 1,
    attempted_at = transaction_timestamp()
FROM outcome, publisher
WHERE job.id = ANY (ARRAY(SELECT id FROM outcome))
  AND job.id = outcome.id
  AND (job.state IN ('available', 'scheduled', 'retryable')) IS TRUE
RETURNING job.id, CASE WHEN outcome.error IS NULL THEN NULL ELSE job.errors END AS errors
"""

LOCKS = {
    "held": "FOR UPDATE SKIP LOCKED",
    "held-nokey": "FOR NO KEY UPDATE SKIP LOCKED",
    "held-nolock": "",
    "held-notrigger": "FOR UPDATE SKIP LOCKED",
}
MODES = ["today", *LOCKS]

#: The state machine's fast path for a batch of outcomes, and the same letting
#: available (and the other claimable states) reach completed.
STRICT = "WHEN 'completed' THEN ARRAY['completed', 'executing']"
RELAXED = (
    "WHEN 'completed' THEN ARRAY['available', 'completed', 'executing', 'retryable', 'scheduled']"
)


@contextlib.contextmanager
def statements(swapped: dict[str, str]) -> Iterator[None]:
    """Run the worker's own Python (``db.fetch_jobs``, ``transitions.finish``) with the
    SQL of some statements swapped: ``db`` reads each statement through ``statement``."""
    from django_pgjobs import db

    original = db.statement
    db.statement = lambda name: swapped.get(name) or original(name)
    try:
        yield
    finally:
        db.statement = original


def relax_transitions() -> None:
    """Let available -> completed through the transition trigger (scratch database)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_functiondef('pgjobs_job_transitioned'::regproc)")
        definition = cursor.fetchone()[0]
        assert STRICT in definition, "the transition trigger's fast path has changed"
        cursor.execute(definition.replace(STRICT, RELAXED))


@contextlib.contextmanager
def without_transition_trigger() -> Iterator[None]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger"
            " WHERE tgname = 'pgjobs_job_transition' AND tgrelid = 'pgjobs_job'::regclass"
        )
        create = cursor.fetchone()[0]
        cursor.execute("DROP TRIGGER pgjobs_job_transition ON pgjobs_job")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(create)


class Holder:
    """Another session holding ``held`` jobs locked, as other workers' running batches
    would: it commits and locks the same jobs again on ``turn()``, so that its
    transaction (which keeps vacuum and pruning back) is never older than a few
    batches. Its xids are kept, to leave its WAL (lock records) out of ours."""

    def __init__(self, url: str, held: int) -> None:
        import psycopg

        self.conn = psycopg.connect(url)
        self.xids: list[str] = []
        self.ids = [
            row[0]
            for row in self.conn.execute(
                "SELECT id FROM pgjobs_job WHERE state = 'available'"
                " ORDER BY priority DESC, run_at, id LIMIT %s",
                [held],
            )
        ]
        self.turn()

    def turn(self) -> None:
        self.conn.commit()
        self.conn.execute("SELECT FROM pgjobs_job WHERE id = ANY(%s) FOR UPDATE", [self.ids])
        xid = self.conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        self.xids.append(str(int(xid) % 2**32))

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()


def wal_bytes(cursor: Any, start: str, end: str, leave_out: list[str]) -> tuple[float, float]:
    """WAL of this database between two LSNs: (all, full-page images). Records that
    name one of its relations, and the records (commits) of the transactions that
    wrote them; other databases' records left out, and transactions ``leave_out``."""
    from django.db import OperationalError, transaction

    query = """
        WITH record AS MATERIALIZED (
            SELECT xid::text AS xid, record_length, fpi_length, block_ref
            FROM pg_get_wal_records_info(%(start)s, %(end)s)
        ), ours AS (
            SELECT DISTINCT xid FROM record
            WHERE block_ref ~ ('/' || %(dboid)s || '/') AND xid <> '0'
        )
        SELECT coalesce(sum(record_length), 0), coalesce(sum(fpi_length), 0) FROM record
        WHERE (block_ref ~ ('/' || %(dboid)s || '/') OR xid IN (SELECT xid FROM ours))
          AND NOT xid = ANY(%(leave_out)s)
        """
    params = {"start": start, "end": end, "dboid": str(database_oid(cursor))}
    try:
        with transaction.atomic():
            cursor.execute(query, params | {"leave_out": leave_out})
            total, fpi = cursor.fetchone()
    except OperationalError as error:  # a segment recycled already
        print(f"  (WAL not read: {error})", file=sys.stderr)
        return math.nan, math.nan
    return int(total), int(fpi)


def database_oid(cursor: Any) -> int:
    cursor.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
    return cursor.fetchone()[0]


def claim_params(batch: int) -> dict[str, Any]:
    from django.utils import timezone

    return {
        "queue": "default",
        "limit": batch,
        "now": timezone.now(),
        "worker_id": None,
        "states": CLAIMABLE,
        "most": 2_000_000,  # loaded.limit() at the default MAX_PAYLOAD_BYTES
        "inline": 8192,  # loaded.INLINE_BYTES
    }


def drain(mode: str, jobs: int, batch: int, held: int, turnover: int) -> dict[str, float]:
    """Drain ``jobs`` no-op jobs in ``mode``; CPU, WAL and updates per job."""
    from django.db import connection, transaction
    from django.utils import timezone

    from django_pgjobs import Job, db, transitions

    db.prepare_on_this_thread()  # as a worker's claim loop and completer do
    Job.enqueue_many([{"task": "pgjobs_tasks.noop"}] * (held + jobs))
    url = os.environ["DATABASE_URL"]
    holder = None
    if mode == "today" and held:
        with transaction.atomic():
            assert len(db.fetch_jobs("claim", claim_params(held))) == held
    elif held:
        holder = Holder(url, held)
    checkpoint(url)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), pg_current_wal_insert_lsn()::text")
        pid, lsn0 = cursor.fetchone()
        # The held jobs' claim counted too, not left pending in this backend's stats.
        upd0, hot0 = job_updates(cursor)
    spent = {"claim_server": 0, "claim_python": 0.0, "finish_server": 0, "finish_python": 0.0}
    done = batches = 0
    load = os.getloadavg()[0]
    started = time.perf_counter()
    while True:
        # held modes: one transaction, open while the batch would run; its COMMIT
        # counts with the outcome write. today: a transaction for each statement.
        outer = transaction.atomic() if mode != "today" else contextlib.nullcontext()
        server, python = backend_cpu_ns(pid), time.process_time()
        with outer:
            with atomic_unless(mode != "today"):
                claimed = db.fetch_jobs("claim", claim_params(batch))
            claim_server, claim_python = backend_cpu_ns(pid) - server, time.process_time() - python
            if claimed:
                now = timezone.now()
                with atomic_unless(mode != "today"):
                    outcomes = [transitions.completed(job, None, now) for job in claimed]
                    transitions.finish(outcomes, list)
        spent["claim_server"] += claim_server
        spent["claim_python"] += claim_python
        spent["finish_server"] += backend_cpu_ns(pid) - server - claim_server
        spent["finish_python"] += time.process_time() - python - claim_python
        if not claimed:
            break
        done += len(claimed)
        batches += 1
        if holder and batches % turnover == 0:
            holder.turn()
    wall = time.perf_counter() - started
    assert done == jobs, (done, jobs)
    # Read at once: another session's CHECKPOINT may recycle the segments soon.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_flush_lsn()::text")
        lsn1 = cursor.fetchone()[0]
        wal, fpi = wal_bytes(cursor, lsn0, lsn1, holder.xids if holder else [])
        cursor.execute("SELECT pg_wal_lsn_diff(%s, %s)", [lsn1, lsn0])
        cluster = float(cursor.fetchone()[0])
    time.sleep(0.6)  # pg_stat_user_tables: the counters are flushed at most once a second
    with connection.cursor() as cursor:
        upd, hot = job_updates(cursor)
    if holder:
        holder.close()
    return {
        "claim_server_us": spent["claim_server"] / jobs / 1e3,
        "finish_server_us": spent["finish_server"] / jobs / 1e3,
        "claim_python_us": spent["claim_python"] / jobs * 1e6,
        "finish_python_us": spent["finish_python"] / jobs * 1e6,
        "wall_us": wall / jobs * 1e6,
        "wal_bytes": wal / jobs,
        "wal_fpi_bytes": fpi / jobs,
        "wal_cluster_bytes": cluster / jobs,
        "updates": (upd - upd0) / jobs,
        "hot": (hot - hot0) / jobs,
        "load": (load + os.getloadavg()[0]) / 2,
    }


def atomic_unless(inside: bool) -> contextlib.AbstractContextManager:
    """A transaction of its own, unless already inside the batch's."""
    from django.db import transaction

    return contextlib.nullcontext() if inside else transaction.atomic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--held", type=int, default=1000, help="other workers' jobs")
    parser.add_argument(
        "--turnover", type=int, default=6, help="held modes: batches between the holder's commits"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="today,held,held-nokey,held-notrigger")
    parser.add_argument("--scratch-sql", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()
    modes = args.modes.split(",")
    assert set(modes) <= set(MODES), f"modes: {', '.join(MODES)}"
    # Unlocked, the select would return the holder's jobs, and the UPDATE wait on them.
    assert "held-nolock" not in modes or not args.held, "held-nolock needs --held 0"
    url = with_database(args.url, f"{database_name(args.url)}_bench_held_{os.getpid()}")
    from pgjobs_runner import PgJobs

    recreate_database(url)
    try:
        adapter = PgJobs(url, BENCH / ".work")
        adapter.install()
        scratch(["CREATE EXTENSION IF NOT EXISTS pg_walinspect", *args.scratch_sql])
        relax_transitions()
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
        for round_ in range(args.rounds + 1):  # round 0: caches and plans, not counted
            for mode in modes:
                adapter.reset()
                r = run(mode, 500 if round_ == 0 else args.jobs, args)
                if round_ == 0:
                    continue
                runs[mode].append(r)
                print(f"round {round_} {mode:>14}: {line(r)}", flush=True)
        print(f"medians ({args.jobs} jobs, batch {args.batch}, held {args.held}):")
        for mode, results in runs.items():
            median = {key: median_of(r[key] for r in results) for key in results[0]}
            print(f"  {mode:>14}: {line(median)}")
        adapter.close()
        from django.db import connection

        connection.close()
    finally:
        drop_database(url)


def run(mode: str, jobs: int, args: argparse.Namespace) -> dict[str, float]:
    swapped = (
        {}
        if mode == "today"
        else {
            "claim": HELD_SELECT.format(lock=LOCKS[mode]),
            "finish": HELD_FINISH,
        }
    )
    trigger = without_transition_trigger() if mode == "held-notrigger" else contextlib.nullcontext()
    with statements(swapped), trigger:
        return drain(mode, jobs, args.batch, args.held, args.turnover)


def median_of(values: Iterable[float]) -> float:
    """The median of the figures read (WAL that could not be read is NaN)."""
    read = [value for value in values if not math.isnan(value)]
    return statistics.median(read) if read else math.nan


def line(r: dict[str, float]) -> str:
    return (
        f"server {r['claim_server_us'] + r['finish_server_us']:.1f}"
        f" (claim {r['claim_server_us']:.1f} + finish {r['finish_server_us']:.1f}) us/job;"
        f" python {r['claim_python_us'] + r['finish_python_us']:.1f}"
        f" ({r['claim_python_us']:.1f} + {r['finish_python_us']:.1f}) us/job;"
        f" WAL {r['wal_bytes']:.0f} B/job ({r['wal_fpi_bytes']:.0f} in page images;"
        f" cluster-wide {r['wal_cluster_bytes']:.0f});"
        f" {r['updates']:.2f} updates/job ({r['hot']:.2f} HOT); wall {r['wall_us']:.0f} us/job;"
        f" load {r['load']:.1f}"
    )


if __name__ == "__main__":
    main()
