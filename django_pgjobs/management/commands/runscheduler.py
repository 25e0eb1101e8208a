"""``manage.py runscheduler``: fire cron schedules and run maintenance until stopped."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_pgjobs import conf, liveness, logs, querylog, schedules, stopsignals, unmigrated
from django_pgjobs.scheduler import Scheduler
from django_pgjobs.schedules import Fired

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
            report = scheduler.run_once()
            fired = [f for f in report.fired if f.fire_at is not None]
            if options["verbosity"] > 0:  # -v 0 from cron: mail only what went wrong
                self.stdout.write(f"fired {len(fired)} tick(s)" + "".join(map(_tick_line, fired)))
            return
        querylog.say_at_start(logger)
        stopsignals.on_stop_signals(scheduler.request_stop, logger, who=scheduler.name)
        try:
            scheduler.run()
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from error


def _tick_line(fired: Fired) -> str:
    """A fired tick in ``--once``'s summary: its job, or why it enqueued none (as the
    tick's record and the log say it), not "job None"."""
    if fired.job_id is not None:
        outcome = f"job {fired.job_id}"
    elif fired.skipped:
        outcome = fired.skipped
    else:
        outcome = f"enqueued nothing: {fired.error}"
    at = fired.fire_at.isoformat() if fired.fire_at else "?"
    return f"\n  {fired.schedule} @ {at}: {outcome}"
