"""System checks for the PGJOBS setting and the tasks' queues: a typo fails at start,
with the fix in the message."""

from __future__ import annotations

import difflib
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction

from . import conf, limits, postgres, queues, unmigrated
from .backoff import Backoff
from .exceptions import InvalidOption
from .queues import QUEUE_NAME

QUEUE_OPTIONS = frozenset(queues.OPTIONS)


def _error(message: str, hint: str | None, number: int) -> Error:
    return Error(message, hint=hint, obj="settings.PGJOBS", id=f"pgjobs.E{number:03d}")


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if not isinstance(getattr(settings, "PGJOBS", {}) or {}, dict):  # before reading it as one
        return [_error("PGJOBS must be a dict.", None, 1)]
    user = conf.user_settings()
    errors: list[Error] = []
    wrong_type = False
    for key, value in user.items():
        if key not in conf.DEFAULTS:
            close = difflib.get_close_matches(key, conf.DEFAULTS, n=1)
            hint = (
                f"Did you mean {close[0]!r}?" if close else f"Known keys: {sorted(conf.DEFAULTS)}"
            )
            errors.append(_error(f"Unknown PGJOBS key {key!r}.", hint, 2))
        elif problem := conf.type_problem(key, value):
            errors.append(_error(problem, None, 3))
            wrong_type = True
    if wrong_type:  # the checks below read every value as its type
        return errors
    return (
        errors
        + _check_values()
        + _check_queues()
        + _check_scheduler()
        + _check_connector_settings()
        + _check_middleware()
    )


def _check_middleware() -> list[Error]:
    from django.core.exceptions import ImproperlyConfigured

    from .middleware import build

    try:
        build(conf.get("MIDDLEWARE"))
    except ImproperlyConfigured as problem:
        return [_error(str(problem), "See docs/operations.md#middleware.", 40)]
    return []


def _check_values() -> list[Error]:
    errors = []
    for key in ("MAX_ATTEMPTS", "WORKER_CONCURRENCY", "MAX_PAYLOAD_BYTES"):
        if conf.get(key) < 1:
            errors.append(_error(f"PGJOBS[{key!r}] must be at least 1.", None, 4))
    if conf.get("WORKER_CONCURRENCY") > limits.MAX_CONCURRENCY:
        most = f"{limits.MAX_CONCURRENCY:,}"
        errors.append(_error(f"PGJOBS['WORKER_CONCURRENCY'] must be at most {most}.", None, 4))
    prefetch = conf.get("WORKER_PREFETCH")
    if prefetch != "auto" and (
        not isinstance(prefetch, int)
        or isinstance(prefetch, bool)
        or not 0 <= prefetch <= limits.MAX_PREFETCH
    ):
        most = f"{limits.MAX_PREFETCH:,}"
        errors.append(
            _error(f"PGJOBS['WORKER_PREFETCH'] must be \"auto\" or 0 to {most}.", None, 4)
        )
    durations = ("POLL_INTERVAL", "HEARTBEAT_INTERVAL", "WORKER_STALE_AFTER", "RESCUE_INTERVAL")
    odd = {key: _duration_errors(key, limits.MAX_SECONDS, None, 4) for key in durations}
    errors += [error for found in odd.values() for error in found]
    errors += _duration_errors("SHUTDOWN_TIMEOUT", limits.MAX_SECONDS, None, 4, zero=True)
    stale, heartbeat = conf.get("WORKER_STALE_AFTER"), conf.get("HEARTBEAT_INTERVAL")
    # Compared only as numbers of seconds (NaN compares False to all); an odd
    # POLL_INTERVAL or RESCUE_INTERVAL hides nothing here.
    both_seconds = not (odd["WORKER_STALE_AFTER"] or odd["HEARTBEAT_INTERVAL"])
    if both_seconds and stale < 2 * heartbeat:
        errors.append(
            _error(
                "PGJOBS['WORKER_STALE_AFTER'] must be at least twice HEARTBEAT_INTERVAL.",
                "Otherwise live workers are taken for dead and their jobs run twice.",
                11,
            )
        )
    if not all(isinstance(name, str) and name for name in conf.get("TASK_MODULES")):
        errors.append(
            _error(
                "PGJOBS['TASK_MODULES'] must be a list of module paths.",
                'e.g. ["myproject.jobs"]',
                30,
            )
        )
    host_name = conf.get("HOST_NAME")
    if host_name is not None and (problem := conf.host_name_problem(host_name)):
        hint = "Set a name of up to 255 printable characters, or None for the machine's hostname."
        errors.append(_error(problem, hint, 14))
    try:
        Backoff.from_dict(conf.get("BACKOFF"))
    except (TypeError, ValueError) as problem:
        errors.append(_error(f"PGJOBS['BACKOFF'] is invalid: {problem}", None, 5))
    if conf.get("DATABASE") not in settings.DATABASES:
        errors.append(_error("PGJOBS['DATABASE'] names no database in DATABASES.", None, 6))
    elif found := postgres.problem(conf.get("DATABASE")):
        # SQLite is what startproject sets up: say so now, not halfway through migrate.
        errors.append(_error(found, None, 42))  # it says "django-pgjobs needs PostgreSQL"
    listen = conf.get("LISTEN_DATABASE")
    if isinstance(listen, str) and listen in settings.DATABASES and postgres.problem(listen):
        errors.append(_error(f"PGJOBS['LISTEN_DATABASE']: {postgres.problem(listen)}", None, 42))
    if isinstance(listen, str) and listen not in settings.DATABASES:
        errors.append(
            _error(
                f"PGJOBS['LISTEN_DATABASE'] is {listen!r}, which names no database in DATABASES.",
                "Name a DATABASES entry with a direct (or session-pooled) connection to the "
                "jobs database, or leave LISTEN_DATABASE out.",
                41,
            )
        )
    return errors + _check_pooled_database(listen)


def _check_pooled_database(listen: Any) -> list[Any]:
    """A LISTEN_DATABASE apart says DATABASE goes through a pooler in transaction
    mode: then its connections must keep no prepared statements across transactions
    (Warning: a session-mode pooler, or a direct LISTEN for another reason, is fine)."""
    database = conf.get("DATABASE")
    if not isinstance(listen, str) or listen == database or database not in settings.DATABASES:
        return []
    options = settings.DATABASES[database].get("OPTIONS") or {}
    errors: list[Any] = []
    if options.get("prepare_threshold") is not None:
        errors.append(
            Warning(
                f"DATABASES[{database!r}] prepares statements (OPTIONS prepare_threshold) "
                "and PGJOBS['LISTEN_DATABASE'] says it goes through a pooler: in "
                "transaction mode a statement prepared on one server connection is "
                "missing on the next.",
                hint="Remove prepare_threshold, unless the pooler is PgBouncer 1.21+ "
                "with max_prepared_statements (docs/howto/pgbouncer.md).",
                obj="settings.DATABASES",
                id="pgjobs.W001",
            )
        )
    return errors


def _check_queues() -> list[Error]:
    errors = []
    declared = conf.get("QUEUES")
    default = conf.get("DEFAULT_QUEUE")
    if default not in declared:
        errors.append(
            _error(
                f"PGJOBS['DEFAULT_QUEUE'] {default!r} is not in PGJOBS['QUEUES'].",
                f"Add {default!r}: {{}} to PGJOBS['QUEUES']{_own_queues_note()}, or set "
                "PGJOBS['DEFAULT_QUEUE'] to one of its queues: jobs whose task names no "
                "queue go there.",
                7,
            )
        )
    for name, options in declared.items():
        if not isinstance(name, str) or not QUEUE_NAME.match(name):
            errors.append(_error(f"Invalid queue name {name!r} in PGJOBS['QUEUES'].", None, 8))
            continue
        if not isinstance(options, dict):
            errors.append(_error(f"PGJOBS['QUEUES'][{name!r}] must be a dict.", None, 9))
            continue
        unknown = set(options) - QUEUE_OPTIONS
        if unknown:
            errors.append(
                _error(
                    f"Unknown option(s) {sorted(unknown)} for queue {name!r}.",
                    _known_options_hint(unknown),
                    10,
                )
            )
            continue
        try:
            queues.check_options(name, options)
        except InvalidOption as problem:  # a value no worker could use
            errors.append(_error(f"PGJOBS['QUEUES'][{name!r}]: {problem}.", None, 13))
    return errors


@register(Tags.database)
def check_task_queues(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """pgjobs.W002: a task's ``queue=`` names no queue, in PGJOBS["QUEUES"] or among the
    admin's queues (rows of the queue table): each enqueue of it raises UnknownQueue.

    Rows are read only as Django's own checks that query do: tagged ``database``, run
    for the databases asked for (``check --database``, ``migrate``), never by a plain
    ``check`` or ``runserver``, which must pass with the database down."""
    try:
        alias, declared = _alias_and_queues()
    except ImproperlyConfigured:  # check_settings says what is wrong with PGJOBS
        return []
    if alias not in (databases or ()) or postgres.problem(alias):
        return []
    undeclared = _undeclared_task_queues(declared)
    stored = _stored_queues(alias, list(undeclared)) if undeclared else set()
    if stored is None:  # the database could not say: no guess
        return []
    missing = [name for name in undeclared if name not in stored]
    return [_missing_queue(name, undeclared[name], declared) for name in missing]


def _own_queues() -> bool:
    """Whether PGJOBS sets QUEUES, which replaces the default one whole."""
    return "QUEUES" in (getattr(settings, "PGJOBS", None) or {})


def _own_queues_note() -> str:
    """Why the default queue is gone, where PGJOBS has a QUEUES of its own."""
    if not _own_queues():
        return ""
    return f" (a QUEUES of your own replaces the default one, {conf.DEFAULTS['QUEUES']!r})"


def _alias_and_queues() -> tuple[str, dict[str, Any]]:
    """PGJOBS["DATABASE"] and PGJOBS["QUEUES"] if they can be read as such."""
    if not isinstance(getattr(settings, "PGJOBS", {}) or {}, dict):
        raise ImproperlyConfigured("PGJOBS must be a dict.")
    alias, declared = conf.get("DATABASE"), conf.get("QUEUES")
    if not isinstance(alias, str) or alias not in settings.DATABASES:
        raise ImproperlyConfigured("PGJOBS['DATABASE'] names no database.")
    return alias, declared


def _undeclared_task_queues(declared: dict[str, Any]) -> dict[str, list[str]]:
    """The queues registered tasks name that PGJOBS["QUEUES"] lacks, with their tasks.

    A task without ``queue=`` goes to DEFAULT_QUEUE, which must be in QUEUES (E007)."""
    from .tasks import registered_tasks

    undeclared: dict[str, list[str]] = {}
    for name, registered in sorted(registered_tasks().items()):
        if registered.queue is not None and registered.queue not in declared:
            undeclared.setdefault(registered.queue, []).append(name)
    return dict(sorted(undeclared.items()))


def _stored_queues(alias: str, names: list[str]) -> set[str] | None:
    """Which of ``names`` the queue table has; None when the database can't be read."""
    from .models import Queue

    try:
        # A savepoint inside a caller's transaction: a failure leaves it usable.
        with transaction.atomic(using=alias):
            rows = Queue.objects.using(alias).filter(name__in=names)
            return set(rows.values_list("name", flat=True))
    except DatabaseError as error:
        cause = error if getattr(error, "sqlstate", None) else error.__cause__
        if getattr(cause, "sqlstate", None) in unmigrated.UNDEFINED:
            return set()  # not migrated yet: no table, so no rows (migrate adds only QUEUES)
        return None  # unreachable, or refused: a check never fails on that


def _missing_queue(name: str, task_names: list[str], declared: dict[str, Any]) -> Warning:
    more = len(task_names) - 3
    shown = ", ".join(task_names[:3]) + (f" and {more} more" if more > 0 else "")
    which = f"Task {shown} names" if len(task_names) == 1 else f"Tasks {shown} name"
    return Warning(
        f"{which} queue {name!r}, which is neither in PGJOBS['QUEUES'] nor a queue of the "
        "admin (Background jobs → Queues): enqueueing raises UnknownQueue.",
        hint=f"{_queue_line(name, declared)} (migrate, or a worker's start, creates its "
        "row), or create the queue in the admin (Background jobs → Queues).",
        obj="settings.PGJOBS",
        id="pgjobs.W002",
    )


def _queue_line(name: str, declared: dict[str, Any]) -> str:
    """The setting that declares queue ``name``. Without a QUEUES of the project's own,
    the whole of it: a QUEUES of only ``name`` would drop the default queue (E007)."""
    if _own_queues():
        return f"Add {name!r}: {{}} to PGJOBS['QUEUES']"
    whole = {**declared, name: {}}
    return f"Set PGJOBS['QUEUES'] = {whole!r}"


def _known_options_hint(unknown: set[Any]) -> str:
    """The option each unknown one is likely a misspelling of, else the known ones."""
    guesses = {
        key: close[0]
        for key in sorted(unknown, key=str)
        if isinstance(key, str) and (close := difflib.get_close_matches(key, QUEUE_OPTIONS, n=1))
    }
    if len(guesses) == len(unknown):
        return " ".join(
            f"Did you mean {right!r} for {wrong!r}?" for wrong, right in guesses.items()
        )
    return f"Known options: {sorted(QUEUE_OPTIONS)}"


#: Longest PRUNE_AFTER, in seconds: a century (its age is subtracted from now; a
#: project that keeps its jobs for good turns pruning off).
MAX_PRUNE_AFTER = 100 * 365 * 24 * 3600.0


def _duration_errors(
    key: str, high: float, hint: str | None, number: int, *, zero: bool = False
) -> list[Error]:
    """The error of a duration setting no process can wait or reach back (0 or less,
    NaN, infinite, past ``high``): NaN passed ``<= 0``, and a worker met it only when
    it slept, heartbeat or shut down by it."""
    try:
        limits.seconds(conf.get(key), f"PGJOBS[{key!r}]", zero=zero, high=high)
    except InvalidOption as problem:
        return [_error(f"{problem}.", hint, number)]
    return []


def _check_scheduler() -> list[Error]:
    from django.core.exceptions import ImproperlyConfigured

    from .schedules import declared_schedule

    errors = []
    try:
        limits.seconds(conf.get("MISFIRE_GRACE"), "PGJOBS['MISFIRE_GRACE']", zero=True)
    except InvalidOption as problem:  # negative, NaN, infinite: no scheduler could start
        errors.append(_error(f"{problem}.", None, 20))
    off = "PGJOBS['PRUNE_INTERVAL'] = None turns pruning off."
    errors += _duration_errors("PRUNE_AFTER", MAX_PRUNE_AFTER, off, 20)
    if conf.get("PRUNE_INTERVAL") is not None:
        errors += _duration_errors(
            "PRUNE_INTERVAL", limits.MAX_SECONDS, "Use None to turn it off.", 20
        )
    for name, options in conf.get("SCHEDULES").items():
        try:
            limits.text(name, "name", 200)
        except InvalidOption as problem:
            errors.append(_error(f"Invalid schedule name {name!r}: {problem.problem}.", None, 21))
            continue
        try:
            declared_schedule(name, options, offline=True)
        except ImproperlyConfigured as problem:
            errors.append(_error(str(problem), None, 22))
    return errors


def _check_connector_settings() -> list[Error]:
    errors = []
    keys = conf.get("SECRET_KEYS")
    if any(not isinstance(key, str) or len(key) < 32 for key in keys):
        errors.append(
            _error(
                "PGJOBS['SECRET_KEYS'] must be a list of strings of at least 32 characters.",
                "Make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                12,
            )
        )
    allowed = conf.get("HTTP_ALLOWED_HOSTS")
    if allowed is not None:
        from .connectors.destinations import Destinations

        try:
            Destinations(allowed)
        except ValueError as problem:
            example = 'e.g. ["api.example.com", "*.example.org", "10.0.0.0/8"]'
            errors.append(_error(f"PGJOBS['HTTP_ALLOWED_HOSTS']: {problem}.", example, 31))
    errors += _duration_errors("CONNECTOR_BUSY_DELAY", limits.MAX_SECONDS, None, 4)
    return errors
