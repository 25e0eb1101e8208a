"""What the prune routine's stranded-job pass (sql/cancel_stranded.sql) costs on a
pipeline-heavy table.

    DATABASE_URL=postgres://.../scratch .venv/bin/python bench/stranded_cost.py \
        [--waiting 100000] [--finished 300000] [--rounds 5]

On a migrated scratch database (its job tables are emptied first): ``finished``
completed jobs, ``waiting // 2`` scheduled ones, and ``waiting`` waiting jobs, each
waiting for two scheduled jobs (unsatisfied edges) and one completed job (a satisfied
edge), as fan-in pipelines leave them. Nothing is stranded, as in a healthy table,
so each round is the pass's whole cost: the statement of cancel_stranded.sql under
EXPLAIN ANALYZE in a transaction rolled back. Prints the median execution time, the
plan of the last round and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import psycopg

SQL = Path(__file__).resolve().parents[1] / "django_pgjobs" / "sql" / "cancel_stranded.sql"

FILL = """
TRUNCATE pgjobs_jobdependency, pgjobs_job RESTART IDENTITY CASCADE;
SET LOCAL pgjobs.events = 'off';
INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt, max_attempts,
    run_at, created_at, finished_at, errors, pending_dependencies, meta)
SELECT 'bench.t', 'default', '[]', '{}', s.state, 0, s.attempt, 3, now(), now(),
       CASE WHEN s.state = 'completed' THEN now() END, '[]', s.pending, '{}'
FROM (
    SELECT 'completed' AS state, 1 AS attempt, 0 AS pending, n
    FROM generate_series(1, %(finished)s) n
    UNION ALL SELECT 'scheduled', 0, 0, n FROM generate_series(1, %(parents)s) n
    UNION ALL SELECT 'waiting', 0, 2, n FROM generate_series(1, %(waiting)s) n
) AS s ORDER BY s.state = 'waiting', s.state = 'scheduled', s.n;
INSERT INTO pgjobs_jobdependency (job_id, depends_on_id, satisfied)
SELECT w, %(finished)s + 1 + (w + k) %% %(parents)s, false
FROM generate_series(%(finished)s + %(parents)s + 1, %(finished)s + %(parents)s + %(waiting)s) w,
     generate_series(0, 1) k
UNION ALL
SELECT w, 1 + w %% %(finished)s, true
FROM generate_series(%(finished)s + %(parents)s + 1, %(finished)s + %(parents)s + %(waiting)s) w;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--finished", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="Don't refill: measure as it is.")
    options = parser.parse_args()
    statement = SQL.read_text()
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        if not options.keep:
            params = {
                "finished": options.finished,
                "parents": max(2, options.waiting // 2),
                "waiting": options.waiting,
            }
            with conn.transaction():
                for step in filter(str.strip, FILL.split(";\n")):
                    conn.execute(step, params if "%(" in step else None)
            conn.execute("VACUUM ANALYZE pgjobs_job")
            conn.execute("VACUUM ANALYZE pgjobs_jobdependency")
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM pgjobs_job WHERE state = 'waiting'),"
            " (SELECT count(*) FROM pgjobs_job), (SELECT count(*) FROM pgjobs_jobdependency)"
        ).fetchone()
        times, plan = [], []
        for _ in range(options.rounds):
            with conn.transaction(force_rollback=True):
                rows = conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, {"now": "2026-01-01T00:00Z"}
                ).fetchall()
            plan = [row[0] for row in rows]
            times.append(float(plan[-1].split(":")[1].split()[0]))
    print("\n".join(plan))
    print(f"waiting jobs {counts[0]:,}, jobs {counts[1]:,}, edges {counts[2]:,}")
    print(
        f"cancel_stranded: median {statistics.median(times):.2f} ms over {len(times)} rounds "
        f"(min {min(times):.2f}, max {max(times):.2f})"
    )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
