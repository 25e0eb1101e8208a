"""The one module that runs the hand-written SQL in ``sql/``.

Each file holds one statement with named parameters. Everything else in the
project uses the ORM.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import psycopg.adapt
import psycopg.copy
import psycopg.generators
import psycopg.waiting
from django.db import (
    DatabaseError,
    InterfaceError,
    InternalError,
    OperationalError,
    connections,
    transaction,
)
from psycopg.pq import Format

from . import conf, loaded, outage, payload

#: What a loop that must go on (a worker's, a scheduler's, an outcome write's retry)
#: answers by closing its connection and trying again after a pause: the server gone
#: or unreachable (OperationalError), a connection closed under it (InterfaceError),
#: or one whose protocol state psycopg no longer trusts (InternalError: "received 2
#: results from command 'COMMIT'" once PgBouncer's server connection was terminated
#: mid-transaction, which ended the worker) and PostgreSQL's own XX errors. The
#: state machine's refusals are no InternalError: they raise check_violation.
CONNECTION_TROUBLE = (OperationalError, InterfaceError, InternalError)

#: SQLSTATEs (and the classes of them, by their first characters) after which the
#: session is no use, or the server is away: connection exceptions (08), operator
#: intervention (57P: shut down, crash, not accepting connections yet, database
#: dropped), a read-only transaction (25006: a standby, after a failover, which a new
#: connection may not reach), a session ended for idling in or out of a transaction
#: (25P03, 25P04), a transaction aborted and never rolled back (25P02: every statement
#: on the session fails until it is, so a loop that kept the connection would fail
#: on it forever; a new one starts clean), insufficient resources (53: too many
#: connections, out of memory, a full disk) and PostgreSQL's internal errors (XX).
CONNECTION_SQLSTATES = ("08", "57P", "25006", "25P02", "25P03", "25P04", "53", "XX")


def connection_trouble(error: BaseException) -> bool:
    """Whether ``error`` is connection trouble: the connection lost, the server away,
    or a session no use any more; the caller closes its connection and retries, as
    through an outage. Told by the SQLSTATE the server sent, not by the exception's
    class: a statement timeout (57014), a lock timeout (55P03), a deadlock (40P01), a
    serialization failure (40001) are OperationalErrors, yet the session survives them,
    and reconnecting gets past none of them; they are the statement's own failure.

    Trouble: an InterfaceError (a connection closed under it); an OperationalError or
    InternalError without a SQLSTATE (psycopg's own: a connection lost, a protocol
    state it no longer trusts, ``SilentConnection``); one with a SQLSTATE of
    ``CONNECTION_SQLSTATES``; a statement prepared on another server connection
    (``PREPARED_ELSEWHERE``: a pooler in transaction mode, raised as an
    OperationalError on purpose). Anything else the server sent for a statement is no
    trouble of the connection's, nor is any other error (a bug of ours, a DataError
    psycopg raised loading a value)."""
    troubles = (*CONNECTION_TROUBLE, psycopg.OperationalError, psycopg.InternalError)
    if isinstance(error, (InterfaceError, psycopg.InterfaceError)):
        return True
    if not isinstance(error, troubles):
        return False
    sent = outage.answered(error)
    if sent is None:
        return True  # no SQLSTATE: the client's own, not the server's answer
    if isinstance(sent, PREPARED_ELSEWHERE):
        return True
    return sent.sqlstate.startswith(CONNECTION_SQLSTATES)


#: PostgreSQL's SQLSTATE for a statement cut short: by its ``statement_timeout``, or
#: cancelled (``pg_cancel_backend``, a client's cancel request). ``cut_short`` tells which.
QUERY_CANCELED = "57014"

#: SQLSTATEs (and classes of them, by their first characters) of a statement the
#: server gave up on, not for anything in its data: a serialization failure (40001),
#: a statement whose completion is unknown (40003), a deadlock (40P01), a lock timeout
#: (55P03), a statement timeout or a cancel (``QUERY_CANCELED``), the server's own system
#: errors (58: an I/O error reading or writing a file). The session lives; the same
#: statement may well go through on a later try.
TRANSIENT_SQLSTATES = ("40001", "40003", "40P01", "55P03", QUERY_CANCELED, "58")

#: What ``cut_short`` returns.
TIMED_OUT = "timed out"
CANCELLED = "cancelled"

#: PostgreSQL's own words (untranslated) for each reason a statement was cut short.
_CUT_SHORT_SAID = {"statement timeout": TIMED_OUT, "user request": CANCELLED}


def cut_short(error: BaseException, took: float, limit: float) -> str | None:
    """Why PostgreSQL cut short the statement that raised ``error`` (``QUERY_CANCELED``),
    which ran ``took`` seconds under a ``statement_timeout`` of ``limit``: ``TIMED_OUT``,
    or ``CANCELLED`` (an operator's ``pg_cancel_backend``, a client's cancel request);
    None if it was not cut short (another error).

    The server's message says which ("canceling statement due to statement timeout",
    "... due to user request"); one translated (``lc_messages``) is told by the time it
    took: a statement cut short before its time limit was not stopped by it (the
    server's clock starts after ours, so a time-out always took ``limit`` here)."""
    sent = outage.answered(error)
    if sent is None or sent.sqlstate != QUERY_CANCELED:
        return None
    said = getattr(getattr(sent, "diag", None), "message_primary", None) or ""
    for words, reason in _CUT_SHORT_SAID.items():
        if said.endswith(f"due to {words}"):
            return reason
    return TIMED_OUT if took >= limit else CANCELLED


def transient(error: BaseException) -> bool:
    """Whether ``error`` is a statement's transient failure (``TRANSIENT_SQLSTATES``,
    told by the SQLSTATE the server sent, on psycopg's error or the one Django wraps):
    no refusal by the rows it touched, nor connection trouble (``connection_trouble``:
    never both). A caller rolls back what it was doing and tries it again later,
    rather than record it as failed for good (a schedule's tick: see
    ``schedules.fire_due``)."""
    if not isinstance(error, (DatabaseError, psycopg.Error)):
        return False  # a bug of ours, even one raised from such an error
    sent = outage.answered(error)
    return sent is not None and sent.sqlstate.startswith(TRANSIENT_SQLSTATES)


#: The partial unique index that holds a key while its job is active (migration 0008).
UNIQUE_KEY_INDEX = "pgjobs_job_queue_unique_key_active"


def unique_key_taken(error: BaseException) -> bool:
    """Whether ``error`` is the unique index of active jobs' keys refusing a row (not a
    CHECK, say): an enqueue's or a retry's job whose key another active job holds."""
    sent = outage.answered(error)
    diag = getattr(sent, "diag", None)
    return getattr(diag, "constraint_name", None) == UNIQUE_KEY_INDEX


#: The detail of the refusal ``unique_key_taken`` tests: the queue (no comma or space
#: in its name: ``queues.NAME_CHARACTERS``), then the key, whatever it holds.
_KEY_TAKEN_DETAIL = re.compile(
    r"Key \(queue, unique_key\)=\(([A-Za-z0-9_.:-]{1,63}), (.*)\) already exists\.\Z",
    re.DOTALL,
)


def key_taken(error: BaseException) -> tuple[str, str] | None:
    """The queue and key that ``error``, a refusal ``unique_key_taken`` tests, names in
    its detail; None if it names none this reads (no detail, a server of other words)."""
    detail = getattr(getattr(outage.answered(error), "diag", None), "message_detail", None)
    found = _KEY_TAKEN_DETAIL.match(detail) if isinstance(detail, str) else None
    return (found[1], found[2]) if found else None


SQL_DIR = Path(__file__).resolve().parent / "sql"

#: Every file of ``sql/``, read with this module as Python reads the module's code: an
#: upgrade that replaces the installed package under running processes (pip removes
#: the old files first) made a statement's first use fail (a worker's hand-back at
#: shutdown, a web process's POST /jobs/run). About 50 small files.
_TEXTS = {path.stem: path.read_text() for path in SQL_DIR.glob("*.sql")}

#: A line of a statement that stands for a shared fragment: ``-- include: claimed_json``.
_INCLUDE = re.compile(r"^[ \t]*-- include: (\w+)[ \t]*$", re.MULTILINE)


@functools.cache
def statement(name: str) -> str:
    """The text of ``sql/<name>.sql``, each ``-- include: <fragment>`` line (alone on
    its line) replaced by the text of ``sql/<fragment>.sql``, itself included the same
    way: columns several statements return alike are written once (claimed_json.sql)."""
    try:
        text = _TEXTS[name]
    except KeyError:
        raise LookupError(f"no statement {name!r} in {SQL_DIR}") from None
    return _INCLUDE.sub(lambda match: statement(match.group(1)).rstrip("\n"), text)


def alias() -> str:
    return conf.get("DATABASE")


_local = threading.local()
TIMESTAMPTZ_OID = 1184

#: Statements a worker prepares: their plan can't go stale. Those that read the job
#: table (claims, finish) are planned each time instead: a generic plan made while
#: the table was empty (a worker started on an idle queue, or after a TRUNCATE)
#: joined a burst of 10,000 new jobs by sequential scans, 100 times slower per
#: claim, until autovacuum's next ANALYZE (tests/test_performance.py).
PREPARABLE = frozenset({"listened", "publish", "publish_now", "queue_configs"})


def prepare_on_this_thread() -> None:
    """Run this thread's statements on a server-binding cursor of its own, and
    its ``PREPARABLE`` ones as server-side prepared statements if the connection
    prepares at all (Django's default, ``prepare_threshold`` None, never does).

    For a worker's own threads (claim loop, completer, publisher): they run the
    same few statements all day. Only there: a worker holds a session of its
    own, while web processes may go through PgBouncer in transaction mode,
    where prepared statements need care (docs/howto/pgbouncer.md).
    """
    _local.prepare = True


def _run(name: str, params: dict[str, Any], using: str) -> tuple[list[str], list[tuple]]:
    connection = connections[using]
    if getattr(_local, "prepare", False):  # a worker's own thread
        connection.ensure_connection()
        with connection.wrap_database_errors:
            cursor = _prepared_cursor(connection.connection)
            try:
                cursor.execute(statement(name), params, prepare=name in PREPARABLE)
            except PREPARED_ELSEWHERE as error:
                raise psycopg.OperationalError(_prepared_elsewhere(name, error)) from error
            columns = _column_names(cursor)
            return columns, _fetch_all(cursor) if columns else []
    if name in PREPARED_ANYWHERE:
        return _run_kept(connection, name, params)
    with connection.cursor() as cursor:
        return _execute(cursor, name, params)


def _execute(cursor: Any, name: str, params: dict[str, Any]) -> tuple[list[str], list[tuple]]:
    """Run statement ``name`` on Django's ``cursor``: its column names and rows."""
    try:
        cursor.execute(statement(name), params)
    except DatabaseError as error:
        if isinstance(error.__cause__, PREPARED_ELSEWHERE):
            raise OperationalError(_prepared_elsewhere(name, error.__cause__)) from error
        raise
    columns = _column_names(cursor.cursor)
    return columns, _fetch_all(cursor.cursor) if columns else []


#: Statements prepared in any process whose connection prepares at all (``OPTIONS``
#: ``prepare_threshold``, which Django's own cursors ignore: they bind on the client):
#: ``Job.enqueue``'s insert, the statement a web process runs most. Its plan and its
#: result don't depend on the job table's contents or columns (the INSERT is inside
#: pgjobs_insert_job, which keeps its own plan).
PREPARED_ANYWHERE = frozenset({"insert_job"})


#: Where a Django connection keeps its cursor for ``PREPARED_ANYWHERE`` statements.
_KEPT = "_pgjobs_kept_cursor"


def _run_kept(connection: Any, name: str, params: dict[str, Any]) -> tuple[list[str], list[tuple]]:
    """Run one of ``PREPARED_ANYWHERE`` on the cursor this Django connection keeps for
    them: on a connection that prepares, a server-binding psycopg cursor, which
    psycopg prepares once it has run ``prepare_threshold`` times; else Django's own
    kind. Still wrapped by Django (its execute wrappers, its query log,
    ``assertNumQueries``), as ``connection.cursor()`` would be.

    Kept for the life of the connection: a new psycopg cursor per statement, and the
    type adapters it looks up afresh, cost ``Job.enqueue`` a fifth of its Python time.
    The cursor is taken off the connection while it runs, so a statement run from
    within (an execute wrapper that enqueues) gets one of its own.
    """
    wrap = _cursor_wrapper(connection)
    if wrap is None:  # a Django without it: the ordinary path, only slower
        with connection.cursor() as cursor:
            return _execute(cursor, name, params)
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    kept = connection.__dict__.pop(_KEPT, None)
    if kept is None or kept.connection is not raw or kept.closed:
        with connection.wrap_database_errors:
            if raw.prepare_threshold is not None:
                kept = psycopg.Cursor(raw)
            else:
                kept = connection.create_cursor()
    try:
        return _execute(wrap(kept), name, params)
    finally:
        connection.__dict__[_KEPT] = kept


def _cursor_wrapper(connection: Any) -> Callable[[Any], Any] | None:
    """Django's private ``connection._prepare_cursor(cursor)``, which wraps a database
    cursor as ``connection.cursor()`` does; None where this Django has no such method
    taking one cursor (a future Django may rename or change it)."""
    prepare = getattr(connection, "_prepare_cursor", None)
    if prepare is None:
        return None
    method = getattr(prepare, "__func__", None)  # with self, if bound to the connection
    takes = _takes(method, 2) if method is not None else _takes(prepare, 1)
    return prepare if takes else None


@functools.cache
def _takes(function: Callable[..., Any], count: int) -> bool:
    """Whether ``function`` can be called with ``count`` positional arguments: read once
    per function (inspect costs more than the statement), not per statement."""
    try:
        inspect.signature(function).bind(*[None] * count)
    except (TypeError, ValueError):  # other arguments, or a signature none can read
        return False
    return True


#: What a prepared statement raises when its transaction runs on another server
#: connection than the one that prepared it: a pooler in transaction mode.
PREPARED_ELSEWHERE = (
    psycopg.errors.InvalidSqlStatementName,
    psycopg.errors.DuplicatePreparedStatement,
)


def _prepared_elsewhere(name: str, error: Exception) -> str:
    return (
        f"statement {name!r}: {error}. A statement prepared on one server connection "
        "was missing on, or clashed with another on, the next: the connection goes "
        "through a pooler in transaction mode (PgBouncer before 1.21, or without "
        "max_prepared_statements) while its DATABASES OPTIONS set prepare_threshold. "
        "Remove prepare_threshold (Django's default: no prepared statements); "
        "see docs/howto/pgbouncer.md."
    )


def _fetch_all(cursor: psycopg.Cursor) -> list[tuple]:
    """The rows of the result, each as a tuple; a row with a value psycopg can't load
    as Python (a time before year 1, written around the CHECK constraints) is an
    ``UnloadableRow`` instead, rather than an error that loses the whole result.

    Claims commit as they return their rows: losing the result would leave every job
    it claimed executing, and the same row would stop the next claim again.
    """
    try:
        return cursor.fetchall()
    except psycopg.DataError:
        pass
    rows: list[tuple] = []
    for index in range(cursor.pgresult.ntuples if cursor.pgresult else 0):
        # Placed on each row before reading it: after an unloadable last row, moving
        # past it was an IndexError that lost the result all the same.
        cursor.scroll(index, "absolute")
        try:
            rows.append(cursor.fetchone())
        except psycopg.DataError:
            rows.append(UnloadableRow(cursor, index))
    return rows


class UnloadableRow(tuple):
    """A row some of whose values can't be loaded: those are None, and ``problems``
    names each with its error."""

    problems: dict[str, str]

    def __new__(cls, cursor: psycopg.Cursor, index: int) -> UnloadableRow:
        result = cursor.pgresult
        assert result is not None
        loading = psycopg.adapt.Transformer.from_context(cursor)
        values, problems = [], {}
        for column in range(result.nfields):
            raw = result.get_value(index, column)
            try:
                loader = loading.get_loader(result.ftype(column), result.fformat(column))
                values.append(None if raw is None else loader.load(raw))
            except psycopg.DataError as error:
                values.append(None)
                problems[(result.fname(column) or b"?").decode()] = str(error)
        row = super().__new__(cls, values)
        row.problems = problems
        return row


def _column_names(cursor: psycopg.Cursor) -> list[str]:
    """The result's column names ([] if it returned no rows), read off the result
    itself: ``cursor.description`` builds a Column object per column per
    statement, which showed in a busy worker's profile."""
    result = cursor.pgresult
    if result is None or result.status != psycopg.pq.ExecStatus.TUPLES_OK:
        return []
    return [(result.fname(i) or b"").decode() for i in range(result.nfields)]


def _prepared_cursor(raw: psycopg.Connection) -> psycopg.Cursor:
    """This thread's server-binding cursor on Django's connection ``raw`` (same
    transaction, same type adapters); psycopg prepares each statement on first use.

    Kept for the life of the connection: a cursor per statement cost more than
    the statement's own binding. Timestamps load through psycopg's C loader
    rather than Django's Python subclass of it, which only swaps an equal UTC
    tzinfo and was a tenth of a busy worker's Python time.
    """
    cursor = getattr(_local, "cursor", None)
    if cursor is None or cursor.connection is not raw or cursor.closed:
        cursor = psycopg.Cursor(raw)
        for format_ in (Format.TEXT, Format.BINARY):
            loader = psycopg.adapters.get_loader(TIMESTAMPTZ_OID, format_)
            if loader is not None:
                cursor.adapters.register_loader(TIMESTAMPTZ_OID, loader)
        _local.cursor = cursor
    return cursor


def fetch_dicts(name: str, params: dict[str, Any], using: str | None = None) -> list[dict]:
    columns, rows = _run(name, params, using or alias())
    return [dict(zip(columns, row, strict=True)) for row in rows]


def fetch_dicts_committed(
    name: str, params: dict[str, Any], using: str | None = None
) -> list[dict]:
    """``fetch_dicts`` on a connection of its own, in autocommit: what is committed now,
    which the snapshot of the caller's REPEATABLE READ or SERIALIZABLE transaction may
    not show. Opened and closed for the one statement (a rare path: see its callers)."""
    own = connections.create_connection(using or alias())
    try:
        with own.cursor() as cursor:
            columns, rows = _execute(cursor, name, params)
    finally:
        own.close()
    return [dict(zip(columns, row, strict=True)) for row in rows]


#: jsonb texts of most JSON fields of a claimed job: made without the decoder.
_EMPTY_JSON = {"[]": list, "{}": dict}


def fetch_dicts_in_one_process(
    name: str, params: dict[str, Any], using: str | None = None
) -> list[dict]:
    """``fetch_dicts``, planned without parallel workers: for statements whose scans are
    short where the planner expects long ones (two workers take ~6 ms to start on a
    2-core box and take the cores the queue's workers need)."""
    using = using or alias()
    with local_settings(using, max_parallel_workers_per_gather="0"):
        return fetch_dicts(name, params, using)


@contextlib.contextmanager
def local_settings(using: str | None = None, **values: str) -> Iterator[None]:
    """Run the block with PostgreSQL settings ``values`` (``statement_timeout="5s"``)
    in force for it alone: set local to a transaction of its own (a savepoint inside a
    caller's), and put back after it for a caller's enclosing transaction; a block that
    raises rolls back to the savepoint, which puts them back as well.

    Never a session-wide SET: under PgBouncer in transaction mode it would stay on the
    server connection, for whichever client gets it next."""
    using = using or alias()
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(statement("local_settings"), _settings(values))
        before = {name: value for name, value, _ in cursor.fetchall()}
        yield
        cursor.execute(statement("local_settings"), _settings(before))


def _settings(values: dict[str, str]) -> dict[str, list[str]]:
    return {"names": list(values), "values": list(values.values())}


def fetch_jobs(name: str, params: dict[str, Any], using: str | None = None) -> list:
    """Run a statement that returns job rows, as Job instances (JSON fields decoded).

    Columns that are not fields of Job (``previous``) become attributes. Built
    with ``Job.from_fields``: a RawQuerySet's per-row machinery, and even
    ``Model.from_db``, cost a worker more than the claim's own work. Each row's
    values go straight into its instance's ``__dict__`` and are decoded there: a
    dict of the row made first and then copied cost 1 us per claimed job more.
    """
    from .models import Job

    using = using or alias()
    columns, rows = _run(name, params, using)
    names, json_names = _job_columns()
    attnames = [names.get(column, column) for column in columns]
    decode = [attname for attname in attnames if attname in json_names]
    jobs = []
    for row in rows:
        job = Job.from_fields({}, using)
        fields = job.__dict__
        fields.update(zip(attnames, row, strict=True))
        problems = getattr(row, "problems", None)
        for attname in decode:
            value = fields[attname]
            if type(value) is str:  # Django's connections hand jsonb over as text
                empty = _EMPTY_JSON.get(value)
                try:
                    fields[attname] = empty() if empty else payload.decode(value)
                except (ValueError, RecursionError) as error:  # written around enqueue
                    fields[attname] = payload.unreadable(value, error)
                    if attname in loaded.NEEDED_TO_RUN:
                        problems = {**(problems or {}), attname: fields[attname].problem}
        sizes = fields.get("oversized")
        if sizes is not None:  # a claim left out or deferred a value (loaded.py)
            over = loaded.left_out(fields, sizes, params["most"])
            problems = {**(problems or {}), **over} if over else problems
            job.deferred = loaded.deferred(sizes, params["inline"], params["most"])
        if problems:
            # The worker fails such a job at once (execution.unrunnable) and goes on.
            job.unreadable = "; ".join(f"{name}: {why}" for name, why in problems.items())
        jobs.append(job)
    return jobs


@functools.cache
def _job_columns() -> tuple[dict[str, str], frozenset[str]]:
    """Job's {column: attname}, and the attnames of its JSON fields."""
    from django.db.models import JSONField

    from .models import Job

    fields = Job._meta.concrete_fields
    return (
        {field.column: field.attname for field in fields},
        frozenset(field.attname for field in fields if isinstance(field, JSONField)),
    )


def copy_in(name: str, chunks: Iterable[bytes], using: str | None = None) -> None:
    """Stream ``chunks`` of COPY data into the ``COPY ... FROM STDIN`` statement
    ``name``, in the current transaction (``copying`` makes the data)."""
    connection = connections[using or alias()]
    connection.ensure_connection()
    with (
        connection.wrap_database_errors,
        connection.connection.cursor() as cursor,
        cursor.copy(statement(name), writer=_CopyWriter(cursor)) as copy,
    ):
        for chunk in chunks:
            copy.write(chunk)


class _CopyWriter(psycopg.copy.LibpqWriter):
    """psycopg's own writer, whose end of the COPY takes any number of results.

    psycopg (3.3) expects exactly one there and raised a bare ``ValueError: too many
    values to unpack`` when PostgreSQL sent two errors: a COPY in a savepoint that
    failed for want of temp file space (``temp_file_limit``, a full disk) failed
    again as its subtransaction was aborted, with "AbortSubTransaction while in
    ABORT state". The first error, which names the COPY's line, is raised instead.
    """

    def finish(self, exc: BaseException | None = None) -> None:
        message = None
        if exc is not None:  # what psycopg's writer tells the server, which fails the COPY
            text = f"error from Python: {type(exc).__qualname__} - {exc}"
            message = text.encode(self.connection.info.encoding, "replace")
        try:
            self.connection.wait(_end_copy(self._pgconn, message, self.connection.info.encoding))
        except psycopg.errors.QueryCanceled:
            if message is None:  # else the failure we asked for: the caller has exc
                raise


def _end_copy(pgconn: Any, message: bytes | None, encoding: str) -> Any:
    """End a COPY FROM STDIN (failing it with ``message``, if any), and raise the
    first error of the results, however many PostgreSQL sends."""
    while pgconn.put_copy_end(message) == 0:  # libpq's buffer is full: wait to write
        while not (yield psycopg.waiting.Wait.W):
            continue
    yield from psycopg.generators.send(pgconn)
    results = yield from psycopg.generators.fetch_many(pgconn)
    if not results:
        raise psycopg.InternalError("the server sent no result at the end of the COPY")
    for result in results:
        if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
            raise psycopg.errors.error_from_result(result, encoding=encoding)


def as_json(value: Any) -> str:
    """A statement parameter as one JSON document (datetimes and UUIDs as text).

    Statements that take many rows take them as one document: binding it costs
    one C-accelerated dumps instead of adapting every array element.
    """
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{value!r} is not JSON-serialisable")


def connection_params(using: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` to the jobs database."""
    params = dict(connections[using or alias()].get_connection_params())
    for internal in ("cursor_factory", "context", "server_side_binding", "prepare_threshold"):
        params.pop(internal, None)
    return params


def listen_alias(using: str | None = None) -> str:
    """The alias to LISTEN on for the jobs of ``using``: ``LISTEN_DATABASE`` stands in
    for ``DATABASE`` (which may go through PgBouncer in transaction mode, where LISTEN
    hears nothing), any other alias is its own."""
    using = using or alias()
    return (conf.get("LISTEN_DATABASE") or using) if using == alias() else using


def execute(name: str, params: dict[str, Any], using: str | None = None) -> int:
    """Run a statement that returns no rows; returns the number of rows it touched."""
    with connections[using or alias()].cursor() as cursor:
        cursor.execute(statement(name), params)
        return cursor.rowcount


def notify(channel: str, payload: str, using: str | None = None) -> None:
    """pg_notify in the current transaction: delivered on commit, dropped on rollback."""
    execute("notify", {"channel": channel, "payload": payload}, using)
