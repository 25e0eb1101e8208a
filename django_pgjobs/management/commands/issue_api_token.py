"""``manage.py issue_api_token NAME --queues a,b``: create an HTTP API token from a shell
(deploy scripts, hosts without the admin). The token is printed once."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from django_pgjobs import conf, unmigrated
from django_pgjobs.api.tokens import issue, unknown_names_said
from django_pgjobs.exceptions import InvalidOption
from django_pgjobs.management import arguments
from django_pgjobs.queues import QUEUE_NAME


def names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


class Command(BaseCommand):
    help = "Create an API token and print it (only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Who or what uses it.")
        parser.add_argument("--queues", required=True, help="Comma-separated, or '*' for all.")
        parser.add_argument("--connectors", default="", help="Connectors its jobs may name.")
        parser.add_argument("--run", action="store_true", help="Allow POST /jobs/run.")
        parser.add_argument("--no-enqueue", action="store_true", help="Forbid POST /jobs.")
        parser.add_argument("--no-read", action="store_true", help="Forbid GET /jobs/<id>.")
        parser.add_argument("--expires-in-days", type=arguments.number, default=None)

    def execute(self, *args: Any, **options: Any) -> Any:
        with unmigrated.required(conf.get("DATABASE")):  # "run migrate", not a traceback
            return super().execute(*args, **options)

    def handle(self, *args: Any, **options: Any) -> None:
        queues = names(options["queues"])
        bad = [name for name in queues if name != "*" and not QUEUE_NAME.match(name)]
        if not queues or bad:
            raise CommandError(f"--queues needs queue names or '*' (bad: {bad})")
        days = options["expires_in_days"]
        if days is not None and not (math.isfinite(days) and days > 0):
            raise CommandError("--expires-in-days must be a number greater than 0")
        try:
            expires_at = None if days is None else timezone.now() + timedelta(days=days)
        except OverflowError:  # NaN and infinity were a ValueError and an OverflowError too
            raise CommandError(f"--expires-in-days: {days:g} days is past the year 9999") from None
        try:
            _, plain = issue(
                options["name"],
                queues,
                connectors=names(options["connectors"]),
                can_enqueue=not options["no_enqueue"],
                can_read=not options["no_read"],
                can_run=options["run"],
                expires_at=expires_at,
            )
        except InvalidOption as refused:  # a name of NUL or over 100 characters, ...
            raise CommandError(str(refused)) from None
        self.stdout.write(plain)
        self.warn_of_unknown(queues, names(options["connectors"]))

    def warn_of_unknown(self, queues: list[str], connectors: list[str]) -> None:
        """Say on stderr which names no queue or connector has; stdout keeps the token
        alone, for scripts."""
        for said in unknown_names_said(queues, connectors):
            self.stderr.write(f"warning: {said}", style_func=self.style.WARNING)
