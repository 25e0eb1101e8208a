"""The ``PGJOBS`` setting: defaults, lookup and validation.

Every key has a default. Unknown keys and values of the wrong type are
reported by the system check in ``checks.py`` so a typo fails loudly at start.
"""

from __future__ import annotations

import socket
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from . import limits
from .exceptions import InvalidOption

DEFAULTS: dict[str, Any] = {
    # Database alias that holds the job tables.
    "DATABASE": "default",
    # Queue used when neither the call nor the task names one.
    "DEFAULT_QUEUE": "default",
    # Queues that exist without anyone creating them in the admin:
    # name -> Queue field values (concurrency, priority, paused, blocking, ...).
    "QUEUES": {"default": {}},
    # Attempts before a failing job is discarded, unless the task or queue says otherwise.
    "MAX_ATTEMPTS": 20,
    # Retry delays: strategy is "exponential" (with jitter), "linear" or "fixed".
    "BACKOFF": {"strategy": "exponential", "base": 2.0, "max": 24 * 3600.0, "jitter": 0.1},
    # Jobs a worker process runs at once (threads), unless --concurrency says otherwise.
    "WORKER_CONCURRENCY": 10,
    # Jobs a worker process claims beyond its free threads, to start as threads free
    # up (unless --prefetch says otherwise). Larger claims cost the database less
    # per job: worth it for many short jobs; 0 for long ones, which would wait
    # behind each other while another worker idles. "auto": grows while claims come
    # back full of short jobs (up to 10 per thread), shrinks when they don't.
    "WORKER_PREFETCH": "auto",
    # Seconds between polls when no notification arrives: the fallback truth.
    "POLL_INTERVAL": 2.0,
    # Seconds between worker heartbeats.
    "HEARTBEAT_INTERVAL": 5.0,
    # Seconds without a heartbeat after which a worker is presumed dead.
    "WORKER_STALE_AFTER": 60.0,
    # Database alias (in DATABASES) of the connection workers LISTEN on, when it must
    # differ from DATABASE: a direct connection, where DATABASE goes through PgBouncer
    # in transaction mode (which makes LISTEN inert). None: DATABASE.
    "LISTEN_DATABASE": None,
    # The host name workers and schedulers record (the Worker processes page, their
    # connections' application_name, `pgjobs health`'s default --host). None: the
    # machine's hostname. Set it where hosts share one: containers on the host network.
    "HOST_NAME": None,
    # Seconds between passes of a worker's rescue of jobs held by dead workers.
    "RESCUE_INTERVAL": 30.0,
    # Seconds a stopping worker waits for running jobs before handing them back.
    "SHUTDOWN_TIMEOUT": 30.0,
    # Largest accepted args+kwargs, in bytes of JSON.
    "MAX_PAYLOAD_BYTES": 1_000_000,
    # Publish every job transition on the pgjobs_events channel (events.listen(),
    # job.wait()); workers publish theirs only while some session listens. Off saves
    # each enqueue its notification, and job.wait() then polls.
    "EVENTS": True,
    # Modules that define tasks, imported at startup besides the tasks.py of each
    # installed app, e.g. ["myproject.jobs"]. Task names resolve against the tasks
    # registered then: a job or a request naming another module never imports it.
    "TASK_MODULES": [],
    # Schedules declared in code: name -> {"cron", "task", and optionally "timezone",
    # "args", "kwargs", "queue", "priority", "enabled", "jitter", "overlap", "catch_up",
    # "catch_up_window", "catch_up_limit"}. Created in the Schedule table when a scheduler
    # starts; rows that exist are left alone (the database wins).
    "SCHEDULES": {},
    # Seconds a tick may be late and still count as on time: it fires under any catch_up
    # policy (with catch_up="none", only such a tick fires).
    "MISFIRE_GRACE": 60.0,
    # Seconds finished jobs and fired-tick records are kept before the scheduler prunes them.
    "PRUNE_AFTER": 7 * 24 * 3600.0,
    # Seconds between prunes by the scheduler; None turns pruning off.
    "PRUNE_INTERVAL": 300.0,
    # Keys that encrypt connector secrets: the first encrypts, all decrypt (rotation).
    # Empty: derived from SECRET_KEY and SECRET_KEY_FALLBACKS.
    "SECRET_KEYS": [],
    # Include each error's traceback in HTTP API answers. Off: tracebacks show server
    # paths and code to API clients; the admin shows them to staff either way.
    "API_TRACEBACKS": False,
    # Hosts and networks http connectors may connect to, e.g. ["api.example.com",
    # "*.example.org", "203.0.113.0/24"], checked on the resolved addresses; None: any.
    "HTTP_ALLOWED_HOSTS": None,
    # Seconds a job waits before trying again when its connector's concurrency is used up.
    "CONNECTOR_BUSY_DELAY": 1.0,
    # Hooks around each job's execution and around enqueue, outermost first: dotted paths
    # of functions f(context, call_next) or of classes with execute() and/or enqueue()
    # (django_pgjobs.middleware; built in: metrics, tracing, tenants).
    "MIDDLEWARE": [],
}

# Types each key must have; QUEUES and BACKOFF are checked in depth by checks.py.
TYPES: dict[str, type | tuple[type, ...]] = {
    "DATABASE": str,
    "DEFAULT_QUEUE": str,
    "QUEUES": dict,
    "MAX_ATTEMPTS": int,
    "BACKOFF": dict,
    "WORKER_CONCURRENCY": int,
    "WORKER_PREFETCH": (int, str),
    "POLL_INTERVAL": (int, float),
    "HEARTBEAT_INTERVAL": (int, float),
    "WORKER_STALE_AFTER": (int, float),
    "SHUTDOWN_TIMEOUT": (int, float),
    "RESCUE_INTERVAL": (int, float),
    "LISTEN_DATABASE": (str, type(None)),
    "HOST_NAME": (str, type(None)),
    "MAX_PAYLOAD_BYTES": int,
    "EVENTS": bool,
    "TASK_MODULES": (list, tuple),
    "SCHEDULES": dict,
    "MISFIRE_GRACE": (int, float),
    "PRUNE_AFTER": (int, float),
    "PRUNE_INTERVAL": (int, float, type(None)),
    "SECRET_KEYS": (list, tuple),
    "CONNECTOR_BUSY_DELAY": (int, float),
    "API_TRACEBACKS": bool,
    "HTTP_ALLOWED_HOSTS": (list, tuple, type(None)),
    "MIDDLEWARE": (list, tuple),
}


def user_settings() -> dict[str, Any]:
    return dict(getattr(django_settings, "PGJOBS", None) or {})


#: ``settings.PGJOBS`` as last read; None: read it again (it was replaced,
#: ``_setting_changed``). Each read of a Django setting is a Python-level
#: ``__getattribute__`` call (Django 6), and enqueue looked up three a job.
_pgjobs: dict[str, Any] | None = None


#: The keys whose type ``get`` has checked since ``PGJOBS`` was last read.
_typed: set[str] = set()


def get(key: str) -> Any:
    """The value of one ``PGJOBS`` key, falling back to its default. A value of another
    type than ``TYPES`` says raises ImproperlyConfigured (check pgjobs.E003's words):
    no WSGI server runs the checks, and ``API_TRACEBACKS = "False"`` sent tracebacks to
    API clients, ``MAX_PAYLOAD_BYTES = "1000000"`` made every enqueue a TypeError."""
    # Read in place (no copy of the dict): enqueue calls this for every job.
    pgjobs = _pgjobs
    if pgjobs is None:
        pgjobs = _read()
    value = pgjobs.get(key, DEFAULTS[key])
    if key not in _typed:  # once a key: a set lookup, not isinstance, on every call
        problem = type_problem(key, value)
        if problem:
            raise ImproperlyConfigured(problem)
        _typed.add(key)
    if key == "BACKOFF":
        return {**DEFAULTS["BACKOFF"], **value}
    return value


def type_problem(key: str, value: Any) -> str | None:
    """Why ``value`` can't be ``PGJOBS[key]`` by its type, naming the type, never the
    value (``SECRET_KEYS = "the key"`` is a likely slip); or None."""
    expected = TYPES[key]
    if isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool):
        return None
    names = (
        " or ".join(kind.__name__ for kind in expected)
        if isinstance(expected, tuple)
        else expected.__name__
    )
    return f"PGJOBS[{key!r}] must be {names}, not {type(value).__name__}."


def _read() -> dict[str, Any]:
    global _pgjobs
    _typed.clear()
    _pgjobs = getattr(django_settings, "PGJOBS", None) or {}
    return _pgjobs


@receiver(setting_changed)
def _setting_changed(setting: str, **kwargs: Any) -> None:
    global _pgjobs
    if setting == "PGJOBS":
        _pgjobs = None


def host_name() -> str:
    """The name of this host, as workers and schedulers record it: ``HOST_NAME``, else
    the machine's hostname (in a container, its own: a pod's name).

    Raises ``ImproperlyConfigured`` (the words of check ``pgjobs.E014``) for a
    ``HOST_NAME`` no row or connection can carry: otherwise a worker would fail at
    connect with libpq's error, or at its first insert."""
    name = get("HOST_NAME")
    if name is None:
        return socket.gethostname()
    problem = host_name_problem(name)
    if problem:
        raise ImproperlyConfigured(problem)
    return name


def host_name_problem(name: Any) -> str | None:
    """What is wrong with ``name`` as ``HOST_NAME`` (a message naming the setting), or None."""
    try:
        limits.host_name(name, "PGJOBS['HOST_NAME']")
    except InvalidOption as error:
        return f"{error}."
    return None
