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
    drain_configs = [Config(2, 1), Config(4, 1)]
    latency_config = Config(1, 1)
    listeners_per_process = 0
    # It runs tens of jobs a second here: a fifth of the jobs keeps a run to minutes.
    scale = 0.2

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
