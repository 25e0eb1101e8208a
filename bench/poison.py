"""Normal jobs' throughput with and without poison jobs among them. Prints figures; not a test.

    .venv/bin/python bench/poison.py                       # 5,000 no-op jobs, 5 poison, 3 rounds
    .venv/bin/python bench/poison.py --jobs 2000 --job-ms 10 --poison 10 --reps 5

A poison job kills the worker process running it (SIGKILL, ``os._exit``, a segfault,
in turn). Each round starts ``runworker --processes 2 --concurrency C`` on a fresh
table, waits until its workers are up, enqueues the normal jobs with the poison jobs
spread evenly among them in one commit, and times until every normal job is
completed: normal jobs per second. Rounds without and with poison alternate (which
comes first alternates too), on the same machine; the ratio of each pair and their
median are printed with the load average, and each poison round checks that every
poison job ends discarded and no normal job does.

Uses its own database (``$BENCH_DATABASE_URL``, default ``pgjobs_poison_bench`` on the
local server), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNNERS = HERE / "runners"
sys.path[:0] = [str(RUNNERS), str(HERE), str(ROOT)]

from common import drop_database, now, start_workers, wait_until  # noqa: E402

DEFAULT_URL = "postgres://root@127.0.0.1:5432/pgjobs_poison_bench"
WAYS_TO_DIE = ("sigkill", "exit", "segfault")


def worker_env(url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "pgjobs_settings",
        "PYTHONPATH": os.pathsep.join([str(RUNNERS), str(HERE), str(ROOT)]),
    }


def one_round(args: argparse.Namespace, url: str, poison: int) -> dict[str, float]:
    from django.db import connection

    from django_pgjobs import Job

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE pgjobs_job, pgjobs_jobdependency, pgjobs_workerprocess")
    command = [sys.executable, str(ROOT / "manage.py"), "runworker", "--processes", "2"]
    command += ["--concurrency", str(args.concurrency)]
    workers = start_workers([command], worker_env(url), ROOT, args.log)
    try:
        from django_pgjobs.models import WorkerProcess

        wait_until(lambda: WorkerProcess.objects.count() >= 2, 60, "2 workers", 0.05)
        specs = [{"task": "pgjobs_tasks.sleep_ms", "args": [args.job_ms]}] * args.jobs
        step = args.jobs // (poison + 1) if poison else 0
        for n in range(poison):
            way = WAYS_TO_DIE[n % len(WAYS_TO_DIE)]
            specs.insert(step * (n + 1) + n, {"task": "pgjobs_tasks.poison", "args": [way]})
        normal = Job.objects.filter(task="pgjobs_tasks.sleep_ms")
        start = now()
        Job.enqueue_many(specs)
        wait_until(lambda: not normal.exclude(state="completed").exists(), 600, "normal jobs")
        elapsed = now() - start
        figures = {"jobs_per_s": args.jobs / elapsed, "seconds": elapsed}
        if poison:
            poisons = Job.objects.filter(task="pgjobs_tasks.poison")
            wait_until(lambda: not poisons.exclude(state="discarded").exists(), 300, "poison")
            figures["suspects"] = normal.filter(meta__crashes__gte=1).count()
            figures["bystanders_discarded"] = normal.filter(state="discarded").count()
        return figures
    finally:
        workers.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="normal jobs per round")
    parser.add_argument("--job-ms", type=float, default=0.0, help="each normal job sleeps this")
    parser.add_argument("--poison", type=int, default=5, help="poison jobs per poison round")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3, help="pairs of rounds")
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    args.log = Path("/tmp") / f"pgjobs-poison-bench-{os.getpid()}.log"
    os.environ.update(worker_env(url))
    drop_database(url, create=True)
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        print(
            f"{args.jobs} normal jobs of {args.job_ms:g} ms, {args.poison} poison; "
            f"runworker --processes 2 --concurrency {args.concurrency}; {args.reps} pairs"
        )
        ratios = []
        for rep in range(args.reps):
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            order = (0, args.poison) if rep % 2 == 0 else (args.poison, 0)
            result = {p: one_round(args, url, p) for p in order}
            base, hit = result[0], result[args.poison]
            ratios.append(hit["jobs_per_s"] / base["jobs_per_s"])
            print(
                f"pair {rep + 1}: without {base['jobs_per_s']:,.0f} jobs/s, "
                f"with {hit['jobs_per_s']:,.0f} jobs/s -> {ratios[-1]:.0%}; "
                f"bystanders run alone {hit['suspects']:.0f}, "
                f"discarded {hit['bystanders_discarded']:.0f}; load before {load}"
            )
        print(f"median ratio with/without poison: {statistics.median(ratios):.0%}")
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
