"""What runworker and runscheduler print when the project configures no logging for us.

Like runserver, they speak by default: a start line, a line per failed attempt, a
warning per discarded job, a stop summary in words. ``-v`` sets how much (0: errors
only; 1: that; 2: also each completed job; 3: debugging), ``--log-format json``
prints one JSON object per line for log pipelines. A project whose LOGGING
configures the ``django_pgjobs`` logger, or the root logger, keeps its own setup:
we add nothing then. Every record about a job carries ``job_id``, ``task``,
``queue`` and ``attempt``; records of a worker process carry ``worker_id``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from django.db import DatabaseError

from .context import current_job

#: Per-job lines (completed jobs) go to this logger, so verbosity 1 can leave them out.
jobs_logger = logging.getLogger("django_pgjobs.jobs")

#: Fields every record of this process carries (the worker's id once it has one).
process_fields: dict[str, Any] = {}

JOB_FIELDS = ("job_id", "task", "queue", "attempt")
FIELDS = (*JOB_FIELDS, "worker_id", "scheduler_id", "token_id", "token_name")

#: The API token of the request being served (id and name, never the secret).
request_fields: contextvars.ContextVar[tuple[tuple[str, Any], ...]] = contextvars.ContextVar(
    "pgjobs_request_fields", default=()
)

#: Django's verbosity -> (level of django_pgjobs, level of django_pgjobs.jobs).
LEVELS = {
    0: (logging.ERROR, logging.ERROR),
    1: (logging.INFO, logging.WARNING),
    2: (logging.INFO, logging.INFO),
    3: (logging.DEBUG, logging.DEBUG),
}


def job_fields(job: Any) -> dict[str, Any]:
    """The ``extra=`` of a record about ``job``."""
    return {"job_id": job.pk, "task": job.task, "queue": job.queue, "attempt": job.attempt}


class AddFields(logging.Filter):
    """Gives every record the job fields of the job it was logged in (if any) and
    the process's fields, so that the JSON format can print them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            context = current_job()
            if context is not None:
                for key, value in job_fields(context.job).items():
                    setattr(record, key, value)
        for key, value in request_fields.get():  # () outside an API request
            if not hasattr(record, key):
                setattr(record, key, value)
        for key, value in process_fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


@contextlib.contextmanager
def api_token(token: Any) -> Iterator[None]:
    """Records logged inside carry ``token_id`` and ``token_name`` (never the secret)."""
    reset = request_fields.set((("token_id", token.pk), ("token_name", token.name)))
    try:
        yield
    finally:
        request_fields.reset(reset)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def configured_elsewhere() -> bool:
    """Whether the project's logging already handles our records."""
    ours = logging.getLogger("django_pgjobs")
    return bool(ours.handlers or logging.getLogger().handlers)


def speak(verbosity: int = 1, log_format: str = "text") -> bool:
    """Print our records on stderr at ``verbosity``, unless the project's logging
    handles them; returns whether it installed the handler."""
    if configured_elsewhere():
        return False
    handler = logging.StreamHandler(sys.stderr)
    text = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(JSONFormatter() if log_format == "json" else text)
    handler.addFilter(AddFields())
    ours = logging.getLogger("django_pgjobs")
    ours.addHandler(handler)
    ours.propagate = False  # nothing else would print it, and lastResort would double it
    level, jobs_level = LEVELS[max(0, min(verbosity, 3))]
    ours.setLevel(level)
    jobs_logger.setLevel(jobs_level)
    return True


def in_words(counts: dict[Any, int]) -> str:
    """``{"completed": 3, "discarded": 1}`` as "3 completed, 1 discarded"; "no jobs".

    In a fixed order (``WORDS_ORDER``, then the rest by name), not in the order the
    counts first happened, so that two summaries read alike side by side."""
    named = {getattr(state, "value", state): n for state, n in counts.items() if n}
    rank = {word: index for index, word in enumerate(WORDS_ORDER)}
    ordered = sorted(named, key=lambda word: (rank.get(word, len(rank)), str(word)))
    return ", ".join(f"{named[word]} {word}" for word in ordered) or "no jobs"


class LoopStep:
    """An error no connection explains (a bug of ours meeting an odd row) in a step a
    loop runs again and again (the heartbeat's rescue, a scheduler pass): the loop
    carries on, as after an outage, instead of ending (a heartbeat thread that ended
    left its worker taken for dead while it still ran its jobs). ``failed(error)`` in
    the loop's ``except Exception``, ``passed()`` after the step went through; or
    ``with step:`` around it, which leaves a database's error to the loop's own
    handling (an outage, a refused statement) and says any other.

    Said at ERROR with its traceback, on ``logger`` (one of django_pgjobs'), the first
    time; while the same error repeats, at DEBUG (a step that fails on every pass
    said so every few seconds); again in full once it changes or after a pass that
    went through. The first pass through after failures says so, at INFO: an operator
    told "carrying on" of a failure learns when it ended."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self._said: str | None = None
        self._failures = 0
        self._since = 0.0  # time.monotonic() of the first failure of this run of them

    def failed(self, error: BaseException) -> None:
        from .transitions import error_line  # not at import: it loads the models

        if not self._failures:
            self._since = time.monotonic()
        self._failures += 1
        line = one_line(error_line(error))
        if line == self._said:
            self.logger.debug("%s failed again: %s", self.what, line)
            return
        self._said = line
        self.logger.error(
            "%s failed: %s; carrying on (said once while it repeats)",
            self.what,
            line,
            exc_info=error,
        )

    def passed(self) -> None:
        if self._failures:
            self.logger.info(
                "%s went through again after %s (%d failed pass(es) meanwhile)",
                self.what,
                delay(time.monotonic() - self._since),
                self._failures,
            )
        self._said, self._failures = None, 0

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: Any, *rest: object) -> bool:
        if kind is None:
            self.passed()
            return False
        if not issubclass(kind, Exception) or issubclass(kind, DatabaseError):
            return False  # a KeyboardInterrupt goes through; the loop handles the database
        self.failed(error)
        return True


def one_line(text: str) -> str:
    """``text`` with its line breaks and other unprintable characters escaped (``\\n``,
    ``\\x1b``; not a tab), for a log line that quotes a job's error: a server's HTML
    answer or a database error's DETAIL spread one failed attempt over many lines, a
    message could forge lines of its own, and one quoting a task's argument sent the
    operator's terminal its escape sequences (a job's record keeps the text as it is).
    Line breaks and spaces it ends with are left out: a command's stderr ends in one,
    and "oops\\n" said nothing more than "oops"."""
    return printable(text.rstrip(), keep="\t")


def printable(text: str, keep: str = "") -> str:
    """``text`` with what is not printable (but ``keep``) escaped as Python writes it
    (``\\n``, ``\\x1b``, ``\\u202e``), for a name a row gave a log line (a job's task,
    an API token's): written by SQL, it forged lines of the log, or sent the
    operator's terminal escape sequences."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def delay(seconds: float) -> str:
    """A wait as a person reads it: 0.9s, 12s, 3m 5s, 5m, 2h 10m, 1d 4h."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s"
    whole = round(seconds)
    for unit, size, smaller, small in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                       ("m", 60, "s", 1)):  # fmt: skip
        if whole >= size:
            rest = whole % size // small
            return f"{whole // size}{unit}" + (f" {rest}{smaller}" if rest else "")
    return f"{whole}s"


#: The order of a stop summary: a worker's outcomes, then a scheduler's ticks.
WORDS_ORDER = ("completed", "failed and will retry", "snoozed", "scheduled", "discarded",
               "cancelled", "handed back", "fired", "skipped", "failed")  # fmt: skip


def add_arguments(parser: Any) -> None:
    """``--log-format``, for runworker and runscheduler (``-v`` is Django's own)."""
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="How to print (when LOGGING doesn't configure django_pgjobs): lines of text, "
        "or one JSON object per line. -v 0 prints only errors, 2 adds each completed job.",
    )


def database(using: str) -> str:
    """``mysite on 127.0.0.1:5432``: the database alias ``using`` is connected to, for
    start lines. Read from the connection, not the settings: without HOST or PORT,
    libpq goes by PGHOST and PGPORT or to its default socket, not localhost."""
    from django.db import connections

    connection = connections[using]
    connection.ensure_connection()
    info = connection.connection.info
    if info.host.startswith("/"):  # a socket directory
        return f"{info.dbname} on socket {info.host}/.s.PGSQL.{info.port}"
    host = f"[{info.host}]" if ":" in info.host else info.host  # IPv6
    return f"{info.dbname} on {host}:{info.port}"
