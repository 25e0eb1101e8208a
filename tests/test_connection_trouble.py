"""``db.connection_trouble``: connection trouble (reconnect and retry, as through an
outage) told by the SQLSTATE the server sent, not by the exception's class. Each
error is a real one, caused against PostgreSQL where a test can, and is judged
both as psycopg raises it and as Django wraps it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import psycopg
import psycopg.errors
import pytest
from django.db import Error, connection, transaction
from django.db import InterfaceError as DjangoInterfaceError
from django.db import OperationalError as DjangoOperationalError

from django_pgjobs import db
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

Connect = Callable[[], psycopg.Connection]


@pytest.fixture
def connect() -> Iterator[Connect]:
    made: list[psycopg.Connection] = []

    def open_one() -> psycopg.Connection:
        conn = psycopg.connect(**db.connection_params(), autocommit=True)
        made.append(conn)
        return conn

    yield open_one
    for conn in made:
        conn.close()


@pytest.fixture
def probe_table(connect: Connect) -> Iterator[str]:
    conn = connect()
    conn.execute("CREATE TABLE pgjobs_trouble_probe (id int PRIMARY KEY, value int)")
    conn.execute("INSERT INTO pgjobs_trouble_probe VALUES (1, 0)")
    yield "pgjobs_trouble_probe"
    conn.execute("DROP TABLE IF EXISTS pgjobs_trouble_probe")


def gone(conn: psycopg.Connection, pid: int) -> None:
    """Wait, with a deadline, until backend ``pid`` has ended (its session ended by
    the server): seen by ``conn``, another session."""
    wait_until(
        lambda: not conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    )


def raised(statement: Callable[[], object]) -> BaseException:
    try:
        statement()
    except Exception as error:
        return error
    raise AssertionError("no error")


def wrapped(error: BaseException) -> BaseException:
    """``error`` as Django raises it: its own class, the psycopg error as its cause."""
    try:
        with connection.wrap_database_errors:
            raise error
    except Error as django_error:
        assert django_error.__cause__ is error
        return django_error
    raise AssertionError("not wrapped")


def judged(error: BaseException, expected: bool, transient: bool = False) -> None:
    """``error`` is connection trouble if ``expected``, a transient statement error
    (``db.transient``) if ``transient``: never both; as psycopg raises it and as
    Django wraps it."""
    assert not (expected and transient)
    assert db.connection_trouble(error) is expected, repr(error)
    assert db.transient(error) is transient, repr(error)
    if isinstance(error, psycopg.Error):
        assert db.connection_trouble(wrapped(error)) is expected, repr(error)
        assert db.transient(wrapped(error)) is transient, repr(error)


# -- statement errors: the session survives them ---------------------------------------


def test_a_statement_timeout_is_no_connection_trouble(connect):
    conn = connect()
    conn.execute("SET statement_timeout = '50ms'")
    error = raised(lambda: conn.execute("SELECT pg_sleep(2)"))
    assert isinstance(error, psycopg.errors.QueryCanceled) and error.sqlstate == "57014"
    judged(error, False, transient=True)
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the session went on


def test_a_statement_timeout_through_django_is_no_connection_trouble():
    with connection.cursor() as cursor:
        error = raised(lambda: _timed_out(cursor))
    assert isinstance(error, DjangoOperationalError)
    assert db.connection_trouble(error) is False
    assert db.transient(error) is True


def _timed_out(cursor) -> None:
    with transaction.atomic():
        cursor.execute("SET LOCAL statement_timeout = '50ms'")
        cursor.execute("SELECT pg_sleep(2)")


def test_a_lock_timeout_is_no_connection_trouble(connect, probe_table):
    holder, waiter = connect(), connect()
    with holder.transaction():
        holder.execute(f"LOCK TABLE {probe_table} IN ACCESS EXCLUSIVE MODE")
        waiter.execute("SET lock_timeout = '50ms'")
        error = raised(lambda: waiter.execute(f"SELECT * FROM {probe_table}"))
    assert isinstance(error, psycopg.errors.LockNotAvailable) and error.sqlstate == "55P03"
    judged(error, False, transient=True)


def test_a_deadlock_is_no_connection_trouble(connect):
    first, second = connect(), connect()
    errors: list[BaseException] = []

    def take(conn: psycopg.Connection, mine: int, theirs: int, ready: threading.Barrier) -> None:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (mine,))
                ready.wait(5)
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (theirs,))
        except psycopg.Error as error:
            errors.append(error)

    ready = threading.Barrier(2)
    threads = [
        threading.Thread(target=take, args=(first, 9101, 9102, ready)),
        threading.Thread(target=take, args=(second, 9102, 9101, ready)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    [error] = errors
    assert isinstance(error, psycopg.errors.DeadlockDetected) and error.sqlstate == "40P01"
    judged(error, False, transient=True)


def test_a_serialization_failure_is_no_connection_trouble(connect, probe_table):
    reader, writer = connect(), connect()
    reader.autocommit = False
    reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    reader.execute(f"SELECT value FROM {probe_table} WHERE id = 1")  # its snapshot
    writer.execute(f"UPDATE {probe_table} SET value = 1 WHERE id = 1")
    error = raised(lambda: reader.execute(f"UPDATE {probe_table} SET value = 2 WHERE id = 1"))
    reader.rollback()
    assert isinstance(error, psycopg.errors.SerializationFailure) and error.sqlstate == "40001"
    judged(error, False, transient=True)


@pytest.mark.parametrize(
    ("statement", "code"),
    [
        ("SELECT 1 / 0", "22012"),
        ("INSERT INTO pgjobs_trouble_probe VALUES (1, 0)", "23505"),
        ("DO $$ BEGIN RAISE EXCEPTION 'a site''s trigger says no'; END $$", "P0001"),
        ("SELECT no_such_column FROM pgjobs_trouble_probe", "42703"),
        # An InternalError by class, whose session is fine: left by no claim, but no
        # lost connection either.
        ("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '25001'; END $$", "25001"),
        # An OperationalError by class, neither trouble nor transient (db.transient).
        ("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '55000'; END $$", "55000"),
    ],
)
def test_other_errors_the_server_sent_are_no_connection_trouble(
    connect, probe_table, statement, code
):
    conn = connect()
    error = raised(lambda: conn.execute(statement))
    assert getattr(error, "sqlstate", None) == code
    judged(error, False)


# -- connection trouble ------------------------------------------------------------------


def test_a_terminated_backend_is_connection_trouble(connect):
    victim, killer = connect(), connect()
    killer.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
    gone(killer, victim.info.backend_pid)
    error = raised(lambda: victim.execute("SELECT 1"))
    assert isinstance(error, psycopg.OperationalError)
    judged(error, True)
    # And the connection it leaves behind, closed.
    judged(raised(lambda: victim.execute("SELECT 1")), True)


def test_a_read_only_transaction_is_connection_trouble(connect):
    """As after a failover: the connection reached a standby; a new one may reach the
    new primary."""
    conn = connect()
    conn.execute("SET default_transaction_read_only = on")
    error = raised(lambda: conn.execute("CREATE TABLE pgjobs_trouble_never (id int)"))
    assert isinstance(error, psycopg.errors.ReadOnlySqlTransaction) and error.sqlstate == "25006"
    judged(error, True)


def test_a_session_ended_idle_in_transaction_is_connection_trouble(connect):
    conn = connect()
    conn.execute("SET idle_in_transaction_session_timeout = '100ms'")
    conn.autocommit = False
    conn.execute("SELECT 1")
    gone(connect(), conn.info.backend_pid)
    error = raised(lambda: conn.execute("SELECT 1"))
    assert isinstance(error, psycopg.OperationalError | psycopg.InternalError)
    judged(error, True)


def test_an_aborted_transaction_never_rolled_back_is_connection_trouble(connect):
    """Every statement fails on such a session until it rolls back: a loop that kept
    the connection would fail on it forever; a new connection starts clean."""
    conn = connect()
    conn.autocommit = False
    raised(lambda: conn.execute("SELECT 1 / 0"))
    error = raised(lambda: conn.execute("SELECT 1"))
    assert isinstance(error, psycopg.errors.InFailedSqlTransaction) and error.sqlstate == "25P02"
    judged(error, True)


def test_a_closed_connection_is_connection_trouble(connect):
    conn = connect()
    conn.close()
    judged(raised(lambda: conn.execute("SELECT 1")), True)
    assert db.connection_trouble(DjangoInterfaceError("connection already closed"))


def test_a_statement_prepared_elsewhere_is_connection_trouble(connect):
    """Raised as an OperationalError on purpose (db.PREPARED_ELSEWHERE): the loop
    reconnects."""
    conn = connect()
    missing = raised(lambda: conn.execute("EXECUTE pgjobs_never_prepared"))
    assert isinstance(missing, psycopg.errors.InvalidSqlStatementName)
    assert db.connection_trouble(missing) is False  # alone: a ProgrammingError
    try:
        raise psycopg.OperationalError("statement 'claim': ... pooler ...") from missing
    except psycopg.OperationalError as error:
        judged(error, True)
    try:
        raise DjangoOperationalError("statement 'claim': ... pooler ...") from wrapped(missing)
    except DjangoOperationalError as error:
        assert db.connection_trouble(error) is True


@pytest.mark.parametrize(
    "code",
    [
        *("08006", "08P01", "57P01", "57P02", "57P03", "57P04"),
        *("25P03", "25P04", "53100", "53300", "XX000", "XX001"),
    ],
)
def test_codes_a_test_cannot_cause_are_connection_trouble(code):
    """Of the classes a test can't bring about on a shared server (a crash, a full
    disk, too many connections): psycopg's own error class for each."""
    judged(psycopg.errors.lookup(code)("said by the server"), True)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("consuming input failed: server closed the connection"),
        psycopg.InternalError("received 2 results from command 'COMMIT'"),
        psycopg.InterfaceError("the connection is lost"),
    ],
    ids=["lost", "protocol", "interface"],
)
def test_psycopgs_own_errors_without_sqlstate_are_connection_trouble(error):
    judged(error, True)


@pytest.mark.parametrize("code", ["40003", "58000", "58030"])
def test_codes_a_test_cannot_cause_are_transient(connect, code):
    """A statement whose completion is unknown, an I/O error of the server's: raised
    by the server (a DO block says the code) as a fault would raise them."""
    conn = connect()
    error = raised(
        lambda: conn.execute(f"DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '{code}'; END $$")
    )
    assert getattr(error, "sqlstate", None) == code
    judged(error, False, transient=True)


def test_other_errors_are_no_connection_trouble(connect):
    conn = connect()
    # psycopg's own, client-side: no connection's trouble either.
    error = raised(lambda: conn.execute("SELECT %s, %s", (1,)))
    assert isinstance(error, psycopg.ProgrammingError) and not getattr(error, "sqlstate", None)
    judged(error, False)
    assert db.connection_trouble(ValueError("a bug of ours")) is False
    assert db.connection_trouble(RuntimeError("ours")) is False
    assert db.transient(ValueError("a bug of ours")) is False


def test_a_bug_of_ours_raised_from_a_transient_error_is_not_transient(connect):
    """Judged by what was raised: a TypeError from a statement timeout is a bug of
    ours, retried by nothing."""
    conn = connect()
    conn.execute("SET statement_timeout = '50ms'")
    timeout = raised(lambda: conn.execute("SELECT pg_sleep(2)"))
    assert db.transient(timeout) is True
    try:
        raise TypeError("ours, handling it") from timeout
    except TypeError as error:
        assert db.transient(error) is False
        assert db.connection_trouble(error) is False
