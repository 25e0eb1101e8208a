"""How fast the admin console is on a large job table. Prints milliseconds; not a test.

    .venv/bin/python bench/admin_changelist.py              # 1,000,000 jobs
    .venv/bin/python bench/admin_changelist.py --rows 200000 --repeat 9

Uses its own database (``$BENCH_DATABASE_URL``, default ``pgjobs_admin_bench`` on the
local server), fills it once with ``--rows`` jobs in realistic proportions (mostly
completed, some discarded with tracebacks, a backlog of available ones) and keeps
it for the next run. Each page is fetched through Django's test client as a
logged-in superuser, the whole request (queries + template rendering) timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from common import FILLED_JOB_COLUMNS, admin_client  # noqa: E402

DEFAULT_URL = "postgres://root@127.0.0.1:5432/pgjobs_admin_bench"

# Filling the table is the one place raw SQL is worth it: generate_series writes a
# million rows in seconds where the ORM would take minutes.
FILL = (
    """
INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt, max_attempts,
                        run_at, created_at, attempted_at, finished_at, errors, result,
                        meta, pending_dependencies)
SELECT (ARRAY['testproject.demo.tasks.add', 'testproject.demo.tasks.send_welcome',
              'testproject.demo.tasks.flaky', 'testproject.demo.tasks.record'])[1 + n %% 4],
       (ARRAY['default', 'mail', 'serial'])[1 + (n / 7) %% 3],
       jsonb_build_array(n, 'user-' || (n %% 5000)),
       '{}'::jsonb,
       state,
       0,"""
    + FILLED_JOB_COLUMNS
    + """,
       CASE WHEN state = 'completed' THEN to_jsonb(n) END,
       '{}'::jsonb,
       0
FROM (
    SELECT n,
           now() - interval '30 days' + (interval '30 days' * n / %(rows)s) AS created,
           CASE WHEN n %% 100 < 90 THEN 'completed'
                WHEN n %% 100 < 95 THEN 'discarded'
                WHEN n %% 100 < 97 THEN 'available'
                WHEN n %% 100 < 98 THEN 'retryable'
                WHEN n %% 100 < 99 THEN 'scheduled'
                ELSE 'cancelled' END AS state
    FROM generate_series(1, %(rows)s) AS n
) AS rows
"""
)


def setup(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(url, dbname="postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    os.environ.setdefault("DEBUG", "false")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    call_command("migrate", verbosity=0)


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE pgjobs_job")


def fill(rows: int) -> None:
    from django.db import connection

    from django_pgjobs.models import Job

    if Job.objects.order_by().count() == rows:
        vacuum()  # a previous run's rolled-back bulk actions left dead index entries
        return
    print(f"filling pgjobs_job with {rows:,} rows…", flush=True)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE pgjobs_job, pgjobs_jobdependency RESTART IDENTITY")
        cursor.execute(FILL, {"rows": rows})
    vacuum()
    print(f"filled in {time.perf_counter() - started:.1f} s", flush=True)


def timed(call, repeat: int) -> tuple[float, float]:
    call()  # warm caches and connections
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs), max(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    setup(os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    fill(options.rows)

    from django.db import transaction

    from django_pgjobs import transitions
    from django_pgjobs.models import Job

    client = admin_client()
    sample = Job.objects.filter(state="discarded").order_by("-id").first()
    year = sample.created_at.year

    pages = {
        "changelist": "/admin/pgjobs/job/",
        "changelist ?state=discarded": "/admin/pgjobs/job/?state=discarded",
        "changelist ?queue=mail&task=…flaky": (
            "/admin/pgjobs/job/?queue=mail&task=testproject.demo.tasks.flaky"
        ),
        "changelist page 200": "/admin/pgjobs/job/?p=200",
        f"changelist ?created_at__year={year}": f"/admin/pgjobs/job/?created_at__year={year}",
        f"search by id ?q={sample.pk}": f"/admin/pgjobs/job/?q={sample.pk}",
        "search text ?q=user-4242": "/admin/pgjobs/job/?q=user-4242",
        "job detail": f"/admin/pgjobs/job/{sample.pk}/change/",
        "dashboard page": "/admin/pgjobs/job/dashboard/",
        "dashboard data (JSON)": "/admin/pgjobs/job/dashboard/data/",
        "queue changelist": "/admin/pgjobs/queue/",
        "worker changelist": "/admin/pgjobs/workerprocess/",
    }
    print(f"\n{Job.objects.order_by().count():,} jobs; median / max of {options.repeat} runs")
    for label, url in pages.items():

        def fetch(url: str = url) -> None:
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            if hasattr(response, "render"):
                response.render()

        median, worst = timed(fetch, options.repeat)
        print(f"  {label:<44} {median:8.1f} ms {worst:8.1f} ms")

    print("\nbulk actions (each rolled back)")
    for label, action in {
        "retry_many(every discarded job)": lambda: transitions.retry_many(
            Job.objects.filter(state="discarded")
        ),
        "cancel_many(every available job)": lambda: transitions.cancel_many(
            Job.objects.filter(state="available")
        ),
    }.items():
        with transaction.atomic():
            started = time.perf_counter()
            changed = action()
            elapsed = (time.perf_counter() - started) * 1000
            transaction.set_rollback(True)
        print(f"  {label:<44} {elapsed:8.1f} ms for {changed:,} jobs")
    vacuum()


if __name__ == "__main__":
    main()
