"""Which queues exist: those declared in settings and those stored in the table."""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from . import conf, limits
from .backoff import STRATEGIES
from .exceptions import InvalidOption, InvalidQueueName, UnknownQueue
from .known import KnownNames

logger = logging.getLogger(__name__)

#: The characters of queue and connector names (also enforced by CHECK constraints).
NAME_CHARACTERS = r"[A-Za-z0-9_.:-]"
QUEUE_NAME = re.compile(rf"^{NAME_CHARACTERS}{{1,63}}\Z")  # \Z: "$" lets a final newline through

#: Queues stored in the table (those of settings are known without it).
_stored = KnownNames("pgjobs.Queue")


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not QUEUE_NAME.match(name):
        raise InvalidQueueName(name)
    return name


def _strategy(value: object, field: str) -> str:
    if value != "" and value not in STRATEGIES:
        shown = limits.shown(value)
        raise InvalidOption(field, f"must be one of {STRATEGIES} (or empty), not {shown}")
    return value  # type: ignore[return-value]


#: The options of a queue (``Queue`` fields, keys of a ``PGJOBS["QUEUES"]`` entry), each
#: with its check: what a worker can use (the database's CHECK constraints agree).
OPTIONS: dict[str, Callable[[Any, str], Any]] = {
    "concurrency": lambda value, field: limits.whole_number(value, field, 0, 2**31 - 1),
    "priority": limits.priority,
    "paused": limits.boolean,
    "blocking": limits.boolean,
    "max_attempts": limits.max_attempts,
    "backoff_strategy": _strategy,
    "backoff_base": lambda value, field: limits.seconds(value, field, zero=True),
    "backoff_max": lambda value, field: limits.seconds(value, field, zero=True),
    "backoff_jitter": limits.fraction,
    "rate_limit": limits.rate_limit,
    "rate_period": limits.rate_period,
    "key_concurrency": lambda value, field: limits.whole_number(value, field, 1, 2**31 - 1),
    "key_rate_limit": limits.rate_limit,
    "key_rate_period": limits.rate_period,
}
#: Options whose None means "no limit" or "the default".
OPTIONAL = frozenset(OPTIONS) - {
    "priority",
    "paused",
    "blocking",
    "backoff_strategy",
    "rate_period",
    "key_rate_period",
}
#: Options that limit how jobs start: claims of such a queue take turns (lock_queue.sql).
FLOW_LIMITS = ("rate_limit", "key_concurrency", "key_rate_limit")


def check_options(name: object, options: dict[str, Any]) -> None:
    """Refuse a queue no worker could use: InvalidQueueName, or InvalidOption naming the
    option (an unknown one too)."""
    validate_name(name)
    for option, value in options.items():
        check = OPTIONS.get(option)
        if check is None:
            raise InvalidOption(option, f"is not a queue option; they are {sorted(OPTIONS)}")
        if value is None and option in OPTIONAL:
            continue
        check(value, option)
    if options.get("blocking"):
        limited = [option for option in FLOW_LIMITS if options.get(option) is not None]
        if limited:
            raise InvalidOption(
                limited[0],
                "does not apply to a blocking queue, which runs one job at a time in order; "
                "use concurrency 1 instead of blocking",
            )


def check_known(name: object) -> str:
    """Return ``name`` if it is a valid, existing queue; raise otherwise.

    Settings queues are always known. Table rows are cached per process and the
    cache is refreshed on a miss, so a queue created in the admin is usable at
    once and a steady state costs no query.
    """
    name = validate_name(name)
    if name in conf.get("QUEUES") or name in _stored:
        return name
    # The miss above read the stored names again: a typo is told the queue it missed.
    close = difflib.get_close_matches(name, sorted({*conf.get("QUEUES"), *_stored.names}), n=1)
    raise UnknownQueue(name, close[0] if close else None)


def sync_from_settings(
    using: str | None = None, model: Any = None, *, warn: bool = False
) -> list[str]:
    """Create the rows of settings-declared queues that don't exist yet.

    Existing rows are left alone: once a queue exists, the admin owns its values. With
    ``warn``, a declaration that differs from its row is logged, as for schedules: a
    value changed in settings alone changes nothing, and said nothing before (``migrate``
    and runworker's start warn, once: not each process of ``--processes``). Returns the
    names created. ``model`` is the Queue of a migration's state (after ``migrate`` to an
    older migration the table has fewer columns): only the options it has fields for
    are set or compared.
    """
    from .models import Queue

    model = model or Queue
    using = using or conf.get("DATABASE")
    declared = conf.get("QUEUES")
    fields = {field.name for field in model._meta.concrete_fields}
    rows = {row.name: row for row in model.objects.using(using).filter(name__in=list(declared))}
    if warn:
        for name, row in rows.items():
            _warn_of_differences(name, declared[name], row, fields)
    existing = set(rows)
    missing = [
        model(name=name, **{key: value for key, value in options.items() if key in fields})
        for name, options in declared.items()
        if name not in existing
    ]
    model.objects.using(using).bulk_create(missing, ignore_conflicts=True)
    return [q.name for q in missing]


#: Not compared with settings: pausing and resuming are an operator's acts, not tuning.
UNCOMPARED = frozenset({"paused"})


def _warn_of_differences(name: str, options: dict[str, Any], row: Any, fields: set[str]) -> None:
    changed = [
        f"{option}: {value!r} in settings, {getattr(row, option)!r} in the database"
        for option, value in options.items()
        if option in fields and option not in UNCOMPARED and getattr(row, option) != value
    ]
    if changed:
        logger.warning(
            "queue %r in PGJOBS['QUEUES'] differs from its row (%s); the database wins: "
            "change the queue in the admin (Background jobs > Queues), or the declaration "
            "to match it",
            name,
            "; ".join(changed),
        )


def set_paused(names: Iterable[str], paused: bool, using: str | None = None) -> int:
    """Pause or resume queues by name; returns how many rows changed.

    Resuming wakes idle workers at once: the queue table's trigger notifies them.
    A name no queue can have raises InvalidQueueName (a NUL was a DataError from the
    database, which aborted the caller's transaction); a bare string raises TypeError:
    ``set_paused("default", True)`` looked for queues "d", "e", ... and paused none.
    """
    from .models import Queue

    if isinstance(names, str):
        shown = limits.shown(names)
        raise TypeError(f"set_paused takes a list of queue names, not the string {shown}")
    checked = [validate_name(name) for name in names]
    limits.boolean(paused, "paused")
    rows = Queue.objects.using(using or conf.get("DATABASE")).filter(name__in=checked)
    return rows.exclude(paused=paused).update(paused=paused)
