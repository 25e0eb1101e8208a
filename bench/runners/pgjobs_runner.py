"""Runs the workloads on django-pgjobs (this repository), in the project's virtualenv."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(ROOT)]

from common import Adapter, Config, main  # noqa: E402


class PgJobs(Adapter):
    name = "django-pgjobs"
    # The tuning sweep (run.py --tune). prefetch: runworker --prefetch N (no
    # prefetch option: its default, auto). events=off turns the events channel off
    # (PGJOBS["EVENTS"] = False): none of the peers publishes every transition.
    drain_configs = [
        Config(2, 50, {"prefetch": 300}),
        Config(2, 50),
        Config(2, 50, {"prefetch": 0}),
        Config(2, 50, {"prefetch": 1000}),
        Config(2, 100, {"prefetch": 300}),
        Config(1, 50, {"prefetch": 300}),
        Config(3, 50, {"prefetch": 300}),
        Config(3, 50, {"prefetch": 1000}),
        Config(3, 20, {"prefetch": 1000}),
        Config(4, 50, {"prefetch": 1000}),
        Config(3, 50, {"prefetch": 3000}),
        Config(2, 100, {"prefetch": 1000}),
        Config(3, 100, {"prefetch": 1000}),
        Config(2, 50, {"prefetch": 300, "events": "off"}),
    ]
    # The best of the sweep by the steady rate of a 200,000-job drain, as for every
    # system (bench/README.md, "Which drain chooses"), with the events channel on
    # (the default; events=off gives up a feature, see bench/README.md): 3 processes
    # beat 2 on this 2-core box, as they take a larger share of it (so do the peers'
    # 4). Prefetch 1000 rather than 300: claims and outcome writes of ~1,000 jobs cost
    # about 7% less CPU per job over a drain than of ~350 (bench/README.md, "W2: where
    # the steady gap comes from"); 3000 only moves work out of the 20,000-job drain's
    # steady window, and holds 7 MB more per process.
    best = Config(3, 50, {"prefetch": 1000})
    # W4: what docs/howto/deploy-workers.md recommends for many short jobs, and
    # `runworker` with no options at all.
    recommended = Config(2, 50, {"prefetch": 300})
    sustained_configs = [recommended, Config(1, 0, name="bare runworker")]
    latency_config = Config(1, 10)

    def __init__(self, url: str, workdir: Path) -> None:
        super().__init__(url, workdir)
        os.environ.update(self.worker_env())
        import django

        django.setup()
        self.version = _version()

    def worker_env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.url,
            "DJANGO_SETTINGS_MODULE": "pgjobs_settings",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), str(ROOT)]),
        }

    def config_env(self, config: Config) -> dict[str, str]:
        return {"PGJOBS_EVENTS": "0"} if config.extra.get("events") == "off" else {}

    def install(self) -> None:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def reset(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE pgjobs_job, pgjobs_jobdependency, pgjobs_workerprocess")

    def enqueue_each(self, count: int) -> None:
        from django_pgjobs import Job

        for _ in range(count):
            Job.enqueue("pgjobs_tasks.noop")

    def enqueue_bulk(self, count: int) -> bool:
        from django_pgjobs import Job

        Job.enqueue_many([{"task": "pgjobs_tasks.noop"}] * count)
        return True

    def enqueue_stamp(self, seq: int) -> None:
        from django_pgjobs import Job

        Job.enqueue("pgjobs_tasks.stamp", args=[seq])

    def done(self) -> int:
        from django_pgjobs.models import Job

        return Job.objects.filter(state="completed").count()

    def busy(self) -> bool:
        from django.db import connection

        with connection.cursor() as cursor:
            # Each EXISTS reads one of the partial indexes on unfinished jobs.
            cursor.execute(
                "SELECT EXISTS (SELECT FROM pgjobs_job WHERE queue = 'default'"
                "  AND state IN ('available', 'scheduled', 'retryable'))"
                " OR EXISTS (SELECT FROM pgjobs_job WHERE state = 'executing')"
            )
            return cursor.fetchone()[0]

    def remaining(self) -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pgjobs_job"
                " WHERE state IN ('available', 'scheduled', 'retryable', 'executing')"
            )
            return cursor.fetchone()[0]

    def outcome_xids(self) -> list[int]:
        from django.db import connection

        with connection.cursor() as cursor:
            # A completed job's last write is its outcome's (finish.sql).
            cursor.execute("SELECT xmin::text::bigint FROM pgjobs_job WHERE state = 'completed'")
            return [xid for (xid,) in cursor.fetchall()]

    def enqueue_stamps(self, first: int, count: int) -> None:
        from django_pgjobs import Job

        Job.enqueue_many(
            [{"task": "pgjobs_tasks.stamp", "args": [seq]} for seq in range(first, first + count)]
        )

    def worker_commands(self, config: Config) -> list[list[str]]:
        command = [sys.executable, str(ROOT / "manage.py"), "runworker"]
        if config.name == "bare runworker":
            return [command]
        command += [
            "--queues=default",
            f"--processes={config.processes}",
            f"--concurrency={config.concurrency}",
        ]
        if "prefetch" in config.extra:
            command.append(f"--prefetch={config.extra['prefetch']}")
        return [command]


def _version() -> str:
    import subprocess
    from importlib.metadata import version

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return f"{version('django-pgjobs')}+{commit}" if commit else version("django-pgjobs")


if __name__ == "__main__":
    main(PgJobs)
