"""``manage.py stopworker ID [ID ...] | --all``: the kill switch, from a shell."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_pgjobs.models import WorkerProcess
from django_pgjobs.workers import request_stop


class Command(BaseCommand):
    help = (
        "Ask worker processes to stop claiming, finish or hand back their jobs, and exit. "
        "IDs are those of the Worker processes admin page."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", type=int, help="Worker process ids.")
        parser.add_argument("--all", action="store_true", help="Stop every worker.")

    def handle(self, *args: Any, **options: Any) -> None:
        ids: list[int] = options["ids"]
        if options["all"] == bool(ids):
            raise CommandError("give worker ids or --all (not both)")
        if ids:
            unknown = set(ids) - set(
                WorkerProcess.objects.filter(pk__in=ids).values_list("pk", flat=True)
            )
            if unknown:
                raise CommandError(f"no worker process with id(s) {sorted(unknown)}")
        flagged = request_stop(None if options["all"] else ids)
        self.stdout.write(f"asked {flagged} worker process(es) to stop")
