"""``manage.py runscheduler``: fire cron schedules and run maintenance until stopped."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_pgjobs import conf, liveness, logs, querylog, schedules, stopsignals, unmigrated
from django_pgjobs.scheduler import Scheduler

logger = logging.getLogger("django_pgjobs.scheduler")


class Command(BaseCommand):
    help = "Fire cron schedules (the Schedule table) and run maintenance until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="Fire what is due now and run due maintenance, then exit 0 "
            "(for hosts that run this from cron every minute: with -v 0 it prints only "
            "errors).",
        )
        parser.add_argument(
            "--no-maintenance",
            action="store_true",
            help="Only fire schedules; no pruning or rescue from this process.",
        )
        logs.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        with unmigrated.required(conf.get("DATABASE")):
            self._handle(options)

    def _handle(self, options: dict[str, Any]) -> None:
        logs.speak(options["verbosity"], options["log_format"])
        liveness.harden_connections(conf.get("DATABASE"), "scheduler")
        scheduler = Scheduler(routines=[] if options["no_maintenance"] else None)
        if options["once"]:
            try:
                created = schedules.sync_from_settings(scheduler.using)
            except ImproperlyConfigured as error:
                raise CommandError(str(error)) from error
            if created:  # as Scheduler.start says it: --once created them without a word
                logger.info("created schedule(s) from settings: %s", ", ".join(created))
            # Each tick is said as it fires, by the scheduler's own log lines (fired
            # and skipped at INFO, failed at ERROR: -v 0 leaves these, for cron to
            # mail); then one closing line, as a worker's stop line closes --burst.
            scheduler.run_once()
            done = logs.in_words(scheduler.stats) if scheduler.stats else "nothing was due"
            logger.info("runscheduler --once: %s", done)
            return
        querylog.say_at_start(logger)
        stopsignals.on_stop_signals(scheduler.request_stop, logger, who=scheduler.name)
        try:
            scheduler.run()
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from error
