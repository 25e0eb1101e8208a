"""``manage.py issue_api_token NAME --queues a,b``: create an HTTP API token from a shell
(deploy scripts, hosts without the admin). The token is printed once."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from django_pgjobs import conf, unmigrated
from django_pgjobs.api.tokens import issue
from django_pgjobs.exceptions import InvalidOption
from django_pgjobs.management import arguments
from django_pgjobs.models import Connector, Queue
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
        """Say on stderr which names no queue or connector has: a typo made a token every
        request was refused with, and nothing said so. It is made all the same (one may
        be created later); stdout keeps the token alone, for scripts."""
        using = conf.get("DATABASE")
        stored = Queue.objects.using(using).values_list("name", flat=True)
        self.warn("queue", queues, {*conf.get("QUEUES"), *stored})
        named = Connector.objects.using(using).values_list("name", flat=True)
        self.warn("connector", connectors, set(named))

    def warn(self, kind: str, given: Iterable[str], known: set[str]) -> None:
        for name in given:
            if name == "*" or name in known:
                continue
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "yet"
            self.stderr.write(
                f"warning: no {kind} is called {name!r} ({hint}); the token names it all the "
                f"same, and a request for it is refused until it exists",
                style_func=self.style.WARNING,
            )
