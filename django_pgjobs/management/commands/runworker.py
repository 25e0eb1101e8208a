"""``manage.py runworker``: run jobs until stopped (or until idle, with --burst)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from django_pgjobs import (
    checks,
    clocks,
    conf,
    limits,
    liveness,
    logs,
    maintenance,
    middleware,
    outage,
    probes,
    querylog,
    stopsignals,
    supervisor,
    tasks,
    transitions,
    unmigrated,
)
from django_pgjobs.connectors.tasks import call as connector_call
from django_pgjobs.exceptions import (
    WHERE_TASKS_ARE_FOUND,
    InvalidOption,
    InvalidQueueName,
    UnknownQueue,
)
from django_pgjobs.management import arguments
from django_pgjobs.metrics import REQUIREMENT as METRICS_REQUIREMENT
from django_pgjobs.metrics import require_client
from django_pgjobs.queues import sync_from_settings
from django_pgjobs.supervisor import MAX_PROCESSES, run_processes
from django_pgjobs.worker import Worker, check_prefetch

logger = logging.getLogger("django_pgjobs.worker")


def _prefetch(value: str) -> int | str:
    """--prefetch: "auto" or a number of jobs."""
    if value == "auto":
        return value
    try:
        return arguments.whole_number(value)
    except argparse.ArgumentTypeError as problem:
        raise argparse.ArgumentTypeError(f'{problem}, nor "auto"') from None


def _configured(key: str) -> str:
    """``PGJOBS[key]`` for the help text. The parser is built before the system checks
    run: a value of the wrong type is said here and left to pgjobs.E003 to refuse, not
    raised as a traceback out of argparse's set-up."""
    try:
        return repr(conf.get(key))
    except ImproperlyConfigured as problem:
        pgjobs = getattr(settings, "PGJOBS", None)
        value = pgjobs.get(key) if isinstance(pgjobs, dict) else None
        return f"{value!r}, refused: {problem}"


class Command(BaseCommand):
    help = "Run background jobs from the given queues until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queues", default="", help="Comma-separated queue names (default: every queue)."
        )
        parser.add_argument(
            "--concurrency",
            type=arguments.whole_number,
            default=None,
            help="Jobs run at once per process, on threads (default: "
            f"PGJOBS['WORKER_CONCURRENCY'], here {_configured('WORKER_CONCURRENCY')}).",
        )
        parser.add_argument(
            "--prefetch",
            type=_prefetch,
            default=None,
            help='Jobs claimed beyond free threads: a number, or "auto" (the default: grows '
            "while claims come back full of short jobs).",
        )
        parser.add_argument(
            "--processes",
            type=arguments.whole_number,
            default=1,
            help="Worker processes to start (default 1; for jobs that compute, about one "
            "per core).",
        )
        parser.add_argument(
            "--burst", action="store_true", help="Run what is due now, then exit 0."
        )
        parser.add_argument(
            "--poll-interval",
            type=arguments.number,
            default=None,
            help="Seconds between polls when no notification arrives (default: "
            f"PGJOBS['POLL_INTERVAL'], here {_configured('POLL_INTERVAL')}).",
        )
        parser.add_argument(
            "--metrics-port",
            type=arguments.whole_number,
            default=None,
            help="Serve /metrics, /livez and /readyz on this port (needs "
            f"pip install '{METRICS_REQUIREMENT}').",
        )
        parser.add_argument(
            "--metrics-address", default="0.0.0.0", help="Address of --metrics-port (all)."
        )
        logs.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        logs.speak(options["verbosity"], options["log_format"])
        queues = [name.strip() for name in options["queues"].split(",") if name.strip()]
        processes = options["processes"]
        if not 1 <= processes <= MAX_PROCESSES:
            raise CommandError(
                f"--processes must be 1 to {MAX_PROCESSES}, not {processes}: each process "
                "holds database connections of its own; for more, run more runworker "
                "commands (on more machines)"
            )
        _check_numbers(options)
        with unmigrated.required(conf.get("DATABASE")), self._endpoint(options) as endpoint:
            say_at_start(conf.get("DATABASE"))

            def run(index: int) -> int:
                return self._run_worker(queues, options, endpoint, index)

            if processes > 1:
                self._worker(queues, options)  # options refused here, not by each child
                serve = (lambda _: endpoint.start()) if endpoint else None
                code = run_processes(processes, run, serve, rescue=rescue_at_once)
            else:
                if endpoint:
                    endpoint.start()
                code = run(0)
        sys.exit(code)

    @contextlib.contextmanager
    def _endpoint(self, options: dict[str, Any]) -> Iterator[probes.Endpoint | None]:
        """The --metrics-port server, bound (not yet serving), or None without the option."""
        port, processes = options["metrics_port"], options["processes"]
        if port is None:
            yield None
            return
        if not 0 <= port <= 65535:
            raise CommandError("--metrics-port must be from 0 to 65535")
        # The socket refuses these with a TypeError ("encoding of hostname failed"),
        # not the OSError of an address it can't bind.
        if problem := limits.text_problem(options["metrics_address"]):
            raise CommandError(f"--metrics-address {problem}")
        try:
            require_client()
        except ImproperlyConfigured as error:
            raise CommandError(f"--metrics-port: {error}") from None
        shared = probes.shared_metrics_dir() if processes > 1 else contextlib.nullcontext()
        with shared:
            try:
                endpoint = probes.Endpoint(
                    options["metrics_address"], port, probes.Board(processes)
                )
            except OSError as error:
                raise CommandError(f"--metrics-port {port}: {error.strerror or error}") from None
            middleware.add("django_pgjobs.metrics.PrometheusMiddleware")
            logger.info(
                "serving /metrics, /livez and /readyz on http://%s:%s",
                options["metrics_address"],
                endpoint.port,
            )
            try:
                yield endpoint
            finally:
                endpoint.stop()

    def _worker(self, queues: list[str], options: dict[str, Any], **more: Any) -> Worker:
        try:
            return Worker(
                queues or None,
                options["concurrency"],
                prefetch=options["prefetch"],
                poll_interval=options["poll_interval"],
                burst=options["burst"],
                **more,
            )
        except (UnknownQueue, InvalidQueueName, ValueError) as error:
            raise CommandError(str(error)) from error

    def _run_worker(
        self,
        queues: list[str],
        options: dict[str, Any],
        endpoint: probes.Endpoint | None = None,
        index: int = 0,
    ) -> int:
        if endpoint and options["processes"] > 1:
            endpoint.close_in_child()
            probes.count_in_shared_dir()
        for alias in {conf.get("DATABASE"), conf.get("LISTEN_DATABASE") or conf.get("DATABASE")}:
            liveness.harden_connections(alias, "worker")
        worker = self._worker(queues, options, on_stale=liveness.exit_stale)
        # Under --processes, the supervisor learns which signal stopped this child: one
        # it did not send itself (`kill -TERM <child>`) is said, and the child replaced.
        stopsignals.on_stop_signals(
            worker.request_stop, logger, heard=supervisor.heard, who=worker.name
        )
        if endpoint is None:
            worker.run()
        else:
            with probes.Reporter(endpoint.board, index, worker):
                worker.run()
        # Handed-back jobs may still run on daemon threads; they die with the
        # process, and anything they would have written is refused by the lease.
        return worker.exit_code


def say_at_start(alias: str) -> None:
    """The lines before a worker's start line: that DEBUG is on (querylog.py), the
    tasks it registered by module, and a WARNING for pgjobs migrations not applied to
    ``alias`` and one per ``pgjobs.W002`` (a task's queue no queue has): a worker runs
    either way, but not as meant, and said nothing of them (a plain ``check`` reads no
    database).

    A connection this opens is closed after it: the worker's own must be opened after
    ``liveness.harden_connections`` (its name, its keepalives), which one already
    open keeps out of."""
    was_open = connections[alias].connection is not None
    try:
        _say_at_start(alias)
    finally:
        if not was_open and not connections[alias].in_atomic_block:
            connections[alias].close()


def _check_numbers(options: dict[str, Any]) -> None:
    """Refuse --concurrency, --prefetch and --poll-interval out of range by the option's
    name, before anything is said: the worker refused them after the DEBUG line and the
    tasks registered, as "concurrency must be between 1 and 10000", naming no option."""
    try:
        if options["concurrency"] is not None:
            limits.whole_number(options["concurrency"], "--concurrency", 1, limits.MAX_CONCURRENCY)
        if options["prefetch"] is not None:
            check_prefetch(options["prefetch"], "--prefetch")
        if options["poll_interval"] is not None:
            limits.seconds(options["poll_interval"], "--poll-interval")
    except InvalidOption as error:
        raise CommandError(str(error)) from None


def _say_at_start(alias: str) -> None:
    querylog.say_at_start(logger)
    _say_tasks()
    try:
        names = unmigrated.pending(alias)  # the migration graph: 10-70 ms, once
    except Exception:  # an unreadable graph or table: the worker's own errors say more
        names = []
    if names:
        flag = "" if alias == "default" else f" --database {alias}"
        logger.warning(
            "%d pgjobs migration(s) not applied to database %s (%s). Run `python manage.py "
            "migrate%s`: until then this worker may fail or miss what they add.",
            len(names),
            logs.database(alias),
            unmigrated.listed(names),
            flag,
        )
    for warning in checks.check_task_queues(databases=[alias]):
        logger.warning("%s %s (%s)", warning.msg, warning.hint, warning.id)
    # Here, once: each worker process syncs the queues again, without a word.
    try:
        sync_from_settings(alias, warn=True)
    except Exception as error:  # the worker's own sync may work (a moment's outage)
        if names and unmigrated.undefined(error):
            # The line above said why (no table to compare with); this one, ending
            # "The worker runs on." just before the worker stops to say migrate, misled.
            return
        if outage.is_refused(error):
            # No connection could be made (a wrong PORT, no server): the worker's start
            # would stop on the same refusal a moment later. Stop on it now, with
            # "Can't connect to database ..." (unmigrated.required), and not after a
            # warning that ends "The worker runs on.".
            raise
        logger.warning(
            "could not compare PGJOBS['QUEUES'] with the queues of database %r (%s); a "
            "declaration that differs from its row is not warned of. The worker runs on.",
            alias,
            logs.one_line(limits.shortened(transitions.error_line(error), 500)),
        )


def _say_tasks() -> None:
    """The project's tasks this worker knows, counted by module: one in a module no app
    imports (``shop/jobs.py``, imported only by the view that enqueues its jobs) is
    missing from the line, where each of its jobs failed with nothing said at start.
    None at all (every module missed, an app left out of INSTALLED_APPS) is a WARNING."""
    own = set(tasks.registered_tasks()) - {connector_call.name}  # pgjobs' own task
    if own:
        modules = Counter(name.rpartition(".")[0] for name in own)
        logger.info(
            "%d task(s) registered, from %s; %s.",
            len(own),
            ", ".join(f"{module} ({count})" for module, count in sorted(modules.items())),
            WHERE_TASKS_ARE_FOUND,
        )
    else:
        logger.warning(
            "no task is registered in this worker: each job it claims will fail with "
            "UnknownTask. Define tasks with @task in the tasks.py module of an app in "
            "INSTALLED_APPS, or list their modules in PGJOBS['TASK_MODULES']."
        )


def rescue_at_once(worker_ids: list[int]) -> None:
    """The supervisor saw the process of these workers end: return their jobs now."""
    maintenance.rescue_orphaned(clocks.database_now(), dead_workers=worker_ids)
