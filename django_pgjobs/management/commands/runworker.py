"""``manage.py runworker``: run jobs until stopped (or until idle, with --burst)."""

from __future__ import annotations

import logging
import signal
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_pgjobs.exceptions import InvalidQueueName, UnknownQueue
from django_pgjobs.supervisor import run_processes
from django_pgjobs.worker import Worker

logger = logging.getLogger("django_pgjobs.worker")

#: Signals closer together than this (seconds) are one request to stop.
SAME_SIGNAL_WITHIN = 1.0


class Command(BaseCommand):
    help = "Run background jobs from the given queues until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queues", default="", help="Comma-separated queue names (default: every queue)."
        )
        parser.add_argument(
            "--concurrency", type=int, default=None, help="Jobs run at once per process."
        )
        parser.add_argument(
            "--prefetch",
            type=int,
            default=None,
            help="Jobs claimed beyond free threads, for many short jobs (default 0).",
        )
        parser.add_argument(
            "--processes", type=int, default=1, help="Worker processes to start (one per core)."
        )
        parser.add_argument(
            "--burst", action="store_true", help="Run what is due now, then exit 0."
        )
        parser.add_argument(
            "--poll-interval", type=float, default=None, help="Seconds between fallback polls."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queues = [name.strip() for name in options["queues"].split(",") if name.strip()]
        if options["processes"] < 1:
            raise CommandError("--processes must be at least 1")
        if options["processes"] > 1:
            sys.exit(run_processes(options["processes"], lambda: self._run_worker(queues, options)))
        sys.exit(self._run_worker(queues, options))

    def _run_worker(self, queues: list[str], options: dict[str, Any]) -> int:
        try:
            worker = Worker(
                queues or None,
                options["concurrency"],
                prefetch=options["prefetch"],
                poll_interval=options["poll_interval"],
                burst=options["burst"],
            )
        except (UnknownQueue, InvalidQueueName, ValueError) as error:
            raise CommandError(str(error)) from error

        first_signal_at: list[float] = []

        def on_signal(signum: int, frame: object) -> None:
            now = time.monotonic()
            # Ctrl-C, or systemd stopping the whole cgroup, reaches a --processes
            # child both directly and through its parent: count those as one.
            if first_signal_at and now - first_signal_at[0] < SAME_SIGNAL_WITHIN:
                return
            first_signal_at.append(now)
            logger.info("received %s", signal.Signals(signum).name)
            worker.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        worker.run()
        # Handed-back jobs may still run on daemon threads; they die with the
        # process, and anything they would have written is refused by the lease.
        return 0
