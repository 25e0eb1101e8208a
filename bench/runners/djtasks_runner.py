"""Runs the workloads on Django's Tasks framework with django-tasks-db's database backend."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from common import Adapter, Config, main  # noqa: E402


class DjangoTasksDB(Adapter):
    name = "django-tasks-db"
    version = version("django-tasks-db")
    # One task at a time per process and no LISTEN: it polls, every --interval
    # seconds when idle (0.1 here; its default is 1).
    # conn_max_age: Django's CONN_MAX_AGE for the workers (0, Django's default, opens
    # a connection per job; None keeps it, as a production setting would).
    drain_configs = [
        Config(processes, 1, {"conn_max_age": age}) for processes in (2, 4, 8) for age in (0, None)
    ]
    # Best of the sweep: the more processes the better (each waits on its queries).
    best = Config(8, 1, {"conn_max_age": None})
    latency_config = Config(1, 1, {"conn_max_age": None})
    listeners_per_process = 0
    # It runs a hundred-odd jobs a second here: a twentieth of the jobs keeps a run short.
    scale = 0.05

    def __init__(self, url: str, workdir: Path) -> None:
        super().__init__(url, workdir)
        os.environ.update(self.worker_env())
        import django

        django.setup()

    def worker_env(self) -> dict[str, str]:
        return {
            "BENCH_DATABASE_URL": self.url,
            "DJANGO_SETTINGS_MODULE": "djtasks_settings",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
        }

    def install(self) -> None:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def reset(self) -> None:
        from django_tasks_db.models import DBTaskResult

        DBTaskResult.objects.all().delete()

    def enqueue_each(self, count: int) -> None:
        from djtasks_tasks import noop

        for _ in range(count):
            noop.enqueue()

    def enqueue_bulk(self, count: int) -> bool:
        return False  # Django's Tasks API has no bulk enqueue

    def enqueue_queued(self, count: int) -> None:
        from django.db import transaction
        from djtasks_tasks import noop

        with transaction.atomic():
            for _ in range(count):
                noop.enqueue()

    def enqueue_stamp(self, seq: int) -> None:
        from djtasks_tasks import stamp

        stamp.enqueue(seq)

    def done(self) -> int:
        from django_tasks_db.models import DBTaskResult

        return DBTaskResult.objects.filter(status="SUCCESSFUL").count()

    def busy(self) -> bool:
        from django_tasks_db.models import DBTaskResult

        return DBTaskResult.objects.filter(status__in=["READY", "RUNNING"]).exists()

    def config_env(self, config: Config) -> dict[str, str]:
        return {"BENCH_CONN_MAX_AGE": str(config.extra.get("conn_max_age", 0))}

    def remaining(self) -> int:
        from django_tasks_db.models import DBTaskResult

        return DBTaskResult.objects.filter(status__in=["READY", "RUNNING"]).count()

    def outcome_xids(self) -> list[int]:
        from django.db import connection
        from django_tasks_db.models import DBTaskResult

        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT xmin::text::bigint FROM {DBTaskResult._meta.db_table}"
                " WHERE status = 'SUCCESSFUL'"
            )
            return [xid for (xid,) in cursor.fetchall()]

    def worker_commands(self, config: Config) -> list[list[str]]:
        command = [
            sys.executable,
            "-m",
            "django",
            "db_worker",
            "--interval=0.1",
            "--no-startup-delay",
            "--no-reload",
        ]
        return [command] * config.processes


if __name__ == "__main__":
    main(DjangoTasksDB)
