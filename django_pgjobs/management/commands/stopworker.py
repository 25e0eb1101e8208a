"""``manage.py stopworker ID [ID ...] | --host NAME | --all``: the kill switch, from a shell."""

from __future__ import annotations

import unicodedata
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_pgjobs import conf, db, limits, liveness, logs, unmigrated
from django_pgjobs.management import arguments
from django_pgjobs.models import WorkerProcess
from django_pgjobs.workers import request_stop


class Command(BaseCommand):
    help = (
        "Ask worker processes to stop claiming, finish or hand back their jobs, and exit. "
        "IDs are those of the Worker processes admin page."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        # Text, read by the id rule (limits.id_in_text): argparse's int() read " 5",
        # "+5", "05", "1_000" and Arabic-Indic digits as ids, and stopped those workers.
        parser.add_argument("ids", nargs="*", help="Worker process ids.")
        parser.add_argument("--host", default=None, help="Stop every worker of this host.")
        parser.add_argument("--all", action="store_true", help="Stop every worker.")

    def execute(self, *args: Any, **options: Any) -> Any:
        with unmigrated.required(conf.get("DATABASE")):  # "run migrate", not a traceback
            return super().execute(*args, **options)

    def handle(self, *args: Any, **options: Any) -> None:
        ids = [_worker_id(text) for text in options["ids"]]
        host: str | None = options["host"]
        if [bool(ids), host is not None, options["all"]].count(True) != 1:
            raise CommandError("give worker ids, --host or --all (one of them)")
        rows = WorkerProcess.objects.using(db.alias())
        if ids:
            unknown = set(ids) - set(rows.filter(pk__in=ids).values_list("pk", flat=True))
            if unknown:
                raise CommandError(f"no worker process with id(s) {sorted(unknown)}")
        if host is not None:
            arguments.host(host)
            ids = list(rows.filter(host=host).values_list("pk", flat=True))
            if not ids:
                raise CommandError(f"no worker process on host {_said(host)}{_alike(rows, host)}")
        flagged = request_stop(None if options["all"] else ids)
        named = rows if options["all"] else rows.filter(pk__in=ids)
        already = named.filter(stop_requested=True).count() - flagged
        told = _told(flagged, already, host, every=options["all"])
        self.stdout.write(told + _stale(named))


def _stale(named: Any) -> str:
    """Of the workers named, those whose heartbeat stopped: a worker killed (SIGKILL, its
    host gone) keeps its row until a rescue pass, and "asked 1 worker process(es) to
    stop" of it read as if one ran and would stop."""
    stale_after = conf.get("WORKER_STALE_AFTER")
    stale = named.exclude(liveness.alive(timedelta(seconds=stale_after))).count()
    if not stale:
        return ""
    return (
        f"; {stale} of them {'has' if stale == 1 else 'have'} sent no heartbeat for over "
        f"{logs.delay(stale_after)} (WORKER_STALE_AFTER): likely gone already, "
        f"{'its' if stale == 1 else 'their'} jobs rescued and "
        f"{'its row' if stale == 1 else 'their rows'} removed by a running worker or scheduler"
    )


def _told(flagged: int, already: int, host: str | None, *, every: bool) -> str:
    """What ``stopworker`` says it did: "asked 0 worker process(es) to stop" of workers
    that were all asked before read as if there were none to stop."""
    if flagged or already <= 0:
        more = f"; {already} more already asked to stop" if already > 0 else ""
        return f"asked {flagged} worker process(es) to stop{more}"
    if every:
        which = f"all {already} worker process(es) were"
    elif host is not None:
        which = f"the {already} worker process(es) on host {_said(host)} were"
    else:
        which = f"the {already} worker process(es) given were"
    # Not "at their next heartbeat": a worker hears at once (or at its heartbeat), then
    # stops as on SIGTERM, waiting for its running jobs.
    wait = logs.delay(conf.get("SHUTDOWN_TIMEOUT"))
    return (
        f"{which} already asked to stop: each stops once its running jobs finish, or hands "
        f"them back after {wait} (SHUTDOWN_TIMEOUT), if not already gone"
    )


def _worker_id(text: str) -> int:
    """The worker id ``text`` writes (as the admin shows it), or a CommandError."""
    worker_id = limits.id_in_text(text)
    if worker_id is None:
        raise CommandError(
            f"not a worker process id: {limits.shown(text)} (the ids of the Worker "
            "processes admin page, as shown there)"
        )
    return worker_id


#: Most distinct hosts read to find those alike (``_alike``): a fleet has far fewer.
HOSTS_READ = 10_000


def _said(host: str) -> str:
    """``host`` quoted, and, if it is not ASCII, as its code points too: 'é' may be one
    character or e and an accent, which look the same but are other hosts."""
    return repr(host) if host.isascii() else f"{host!r} ({host!a})"


def _folded(host: str) -> str:
    return unicodedata.normalize("NFKC", host).casefold()


def _alike(rows: Any, host: str) -> str:
    """The hosts of workers that differ from ``host`` only in letter case or Unicode
    form, named (they look the same or nearly): ``--host`` matches exactly."""
    key = _folded(host)
    hosts = rows.order_by("host").values_list("host", flat=True).distinct()[:HOSTS_READ]
    alike = [other for other in hosts if _folded(other) == key]
    if not alike:
        return ""
    return "; --host matches exactly, and these differ only in case or Unicode form: " + (
        ", ".join(_said(other) for other in alike)
    )
