"""Migrations: what they install is what the models and SQL files say, databases of the
history before the squash upgrade to the same schema, and only PostgreSQL is migrated."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from psycopg import sql

from django_pgjobs.migrations import SQL_DIR
from tests.conftest import ROOT, maintenance_connection
from tests.conftest import test_database_env as database_env

pytestmark = pytest.mark.django_db(transaction=True)

#: Functions the history before the squash left behind, unused: each trigger rewrite
#: (0009, 0011) kept the functions of the triggers it replaced, for its reverse.
LEFT_BEHIND_BEFORE_SQUASH = {
    "pgjobs_check_transition()",
    "pgjobs_check_transitions()",
    "pgjobs_publish_change()",
    "pgjobs_publish_changes()",
    "pgjobs_release_dependents()",
    "pgjobs_release_dependents_of()",
}


def trigger_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE 'pgjobs_%%'"
        )
        return {row[0] for row in cursor.fetchall()}


def test_triggers_are_installed_and_reversible():
    connection.ensure_connection()
    expected = {
        "pgjobs_job_errors_bounded",
        "pgjobs_job_inserted",
        "pgjobs_job_made_available",
        "pgjobs_job_transition",
        "pgjobs_queue_changed",
        "pgjobs_schedule_changed",
        "pgjobs_schedule_replan",
    }
    assert trigger_names() == expected
    call_command("migrate", "pgjobs", "0001", verbosity=0)
    try:
        assert trigger_names() == set()
        assert functions(connection.connection) == {}
    finally:
        call_command("migrate", "pgjobs", verbosity=0)
    assert trigger_names() == expected


def test_models_and_migrations_agree():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_the_history_is_numbered_without_gaps():
    loader_names = sorted(
        path.stem for path in (ROOT / "django_pgjobs" / "migrations").glob("[0-9]*.py")
    )
    assert [int(name[:4]) for name in loader_names] == list(range(1, len(loader_names) + 1))
    for name in loader_names:  # each SQL file belongs to a migration, with its reverse
        assert not (SQL_DIR / f"{name}.sql").exists() or (SQL_DIR / f"{name}.reverse.sql").exists()
    for path in SQL_DIR.glob("*.sql"):
        assert path.name.split(".")[0] in loader_names, f"{path.name} belongs to no migration"


def test_the_claim_query_uses_the_claim_index():
    from django_pgjobs import db

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN " + db.statement("claim"),
            {
                "queue": "default",
                "limit": 10,
                "now": "2026-01-01T00:00:00Z",
                "worker_id": None,
                "states": ["available", "retryable", "scheduled"],
                "most": 2_000_000,
                "inline": 8192,
            },
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "pgjobs_job_claim" in plan, plan


# -- the schema, read from pg_catalog ----------------------------------------------------

_STRING = r"'(?:[^']|'')*'"


def normalized(source: str) -> str:
    """SQL without its comments, and without whitespace where it separates nothing."""
    keep = lambda pattern: lambda m: m.group(1) or pattern  # noqa: E731
    source = re.sub(rf"({_STRING})|--[^\n]*", keep(""), source)
    source = re.sub(rf"({_STRING})|\s+", keep(" "), source)
    return re.sub(rf"({_STRING})|(?<=\W) | (?=\W)", keep(""), source).strip()


def _rows(conn: Any, query: str) -> list[tuple]:
    with conn.cursor() as cursor:
        cursor.execute(query)
        return [
            tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in cursor.fetchall()
        ]


_OURS = "n.nspname = current_schema() AND c.relname LIKE 'pgjobs%'"


def functions(conn: Any) -> dict[str, tuple]:
    """{signature: (kind, language, volatility, settings, result, normalized body)}."""
    return {
        row[0]: row[1:]
        for row in _rows(
            conn,
            """
            SELECT p.oid::regprocedure::text, p.prokind, l.lanname, p.provolatile,
                   p.proconfig, pg_get_function_result(p.oid), p.prosrc
            FROM pg_proc AS p
            JOIN pg_namespace AS n ON n.oid = p.pronamespace
            JOIN pg_language AS l ON l.oid = p.prolang
            WHERE n.nspname = current_schema() AND p.proname LIKE 'pgjobs%'
            """,
        )
    }


def schema(conn: Any) -> dict[str, Any]:
    """Every pgjobs table, column, index, constraint, trigger and function of a database."""
    return {
        "tables": set(
            _rows(
                conn,
                f"""SELECT c.relname, c.relkind, c.reloptions FROM pg_class AS c
                JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE {_OURS}""",
            )
        ),
        "columns": set(
            _rows(
                conn,
                f"""SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                       a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity,
                       a.attgenerated, a.attcollation
                FROM pg_attribute AS a
                JOIN pg_class AS c ON c.oid = a.attrelid
                JOIN pg_namespace AS n ON n.oid = c.relnamespace
                LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE {_OURS} AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped""",
            )
        ),
        "indexes": set(
            _rows(
                conn,
                f"""SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
                FROM pg_index AS i
                JOIN pg_class AS c ON c.oid = i.indexrelid
                JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE {_OURS}""",
            )
        ),
        "constraints": set(
            _rows(
                conn,
                f"""SELECT c.relname, k.conname, pg_get_constraintdef(k.oid),
                       k.condeferrable, k.condeferred, k.convalidated
                FROM pg_constraint AS k
                JOIN pg_class AS c ON c.oid = k.conrelid
                JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE {_OURS}""",
            )
        ),
        "sequences": set(
            _rows(
                conn,
                f"""SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart,
                       s.seqincrement, s.seqmin, s.seqmax, s.seqcycle
                FROM pg_sequence AS s
                JOIN pg_class AS c ON c.oid = s.seqrelid
                JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE {_OURS}""",
            )
        ),
        "triggers": set(
            _rows(
                conn,
                f"""SELECT t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
                FROM pg_trigger AS t
                JOIN pg_class AS c ON c.oid = t.tgrelid
                JOIN pg_namespace AS n ON n.oid = c.relnamespace
                WHERE {_OURS} AND NOT t.tgisinternal""",
            )
        ),
        "functions": {
            signature: (*details[:-1], normalized(details[-1]))
            for signature, details in functions(conn).items()
        },
    }


def differences(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for part in left:
        if isinstance(left[part], dict):
            keys = left[part].keys() | right[part].keys()
            odd = {k: (left[part].get(k), right[part].get(k)) for k in keys}
            odd = {k: pair for k, pair in odd.items() if pair[0] != pair[1]}
        else:
            odd = {"only left": left[part] - right[part], "only right": right[part] - left[part]}
            odd = {k: v for k, v in odd.items() if v}
        if odd:
            found[part] = odd
    return found


# -- scratch databases ------------------------------------------------------------------


def _admin() -> psycopg.Connection:
    return maintenance_connection(connection.settings_dict)


class Scratch:
    """An empty database named after the test database (so a dead run's is dropped)."""

    def __init__(self, suffix: str) -> None:
        self.name = f"{connection.settings_dict['NAME']}_{suffix}"
        url = database_env()["DATABASE_URL"]
        self.url = url.rsplit("/", 1)[0] + "/" + self.name

    def __enter__(self) -> Scratch:
        with _admin() as admin:
            admin.execute(self._drop())
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        return self

    def __exit__(self, *exc: object) -> None:
        with _admin() as admin:
            admin.execute(self._drop())

    def _drop(self) -> sql.Composed:
        return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True)

    def manage(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return manage(*args, DATABASE_URL=self.url, **env)


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``manage.py`` on tests/settings_for_migrations.py, in a process of its own."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=os.environ | {"DJANGO_SETTINGS_MODULE": "tests.settings_for_migrations"} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def migrated(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def upgraded_and_fresh(django_db_blocker: Any) -> Iterator[tuple[Scratch, Scratch]]:
    """A database migrated with the history before the squash up to 0015 and then with
    today's migrations, beside one migrated with today's only."""
    with django_db_blocker.unblock(), Scratch("before_squash") as old, Scratch("fresh") as fresh:
        migrated(old.manage("migrate", "pgjobs", "-v", "0", PGJOBS_TEST_OLD_MIGRATIONS="1"))
        with old.connect() as conn:  # some rows, to see them survive
            conn.execute(
                "INSERT INTO pgjobs_job (task, queue, args, kwargs, state, priority, attempt,"
                " max_attempts, run_at, created_at, errors, pending_dependencies, meta)"
                " VALUES ('tests.tasks_for_tests.add', 'default', '[1, 2]', '{}', 'available',"
                " 0, 0, 20, now(), now(), '[]', 0, '{}')"
            )
        migrated(old.manage("migrate", "pgjobs", "-v", "0"))
        migrated(fresh.manage("migrate", "pgjobs", "-v", "0"))
        yield old, fresh


#: Migrations added on top of the squash, in order.
MIGRATIONS_AFTER_SQUASH = [
    "0003_process_clock_skew",
    "0004_boundaries",
    "0005_snooze_to_scheduled",
    "0006_schedule_policies",
    "0007_rate_limits",
    "0008_unique_keys_per_queue",
    "0009_debounce_index",
    "0010_connector_throttled_until",
    "0011_queue_key_concurrency",
    "0012_connector_slots",
    "0013_queue_key_rate_limit",
    "0014_one_insert_trigger",
    "0015_insert_job_function",
    "0016_one_executing_index",
    "0017_failed_by_id_index",
    "0018_bounded_errors",
    "0019_linear_insert_events",
    "0020_few_edges_per_job",
    "0021_cascade_in_a_loop",
    "0022_insert_job_announces_itself",
    "0023_compact_job_checks",
    "0024_schedule_changes_by_column",
    "0025_cascade_finds_children_by_id",
    "0026_dependency_count_stops_at_zero",
    "0027_workerprocess_failing",
    "0028_unique_key_since_index",
    "0029_rare_states_by_id",
]


def test_a_database_at_0015_upgrades_to_the_schema_of_a_fresh_install(upgraded_and_fresh):
    old, fresh = upgraded_and_fresh
    with old.connect() as old_conn, fresh.connect() as fresh_conn:
        before, now = schema(old_conn), schema(fresh_conn)
        left_behind = set(before["functions"]) - set(now["functions"])
        assert left_behind == LEFT_BEHIND_BEFORE_SQUASH
        for signature in left_behind:
            del before["functions"][signature]
        assert differences(before, now) == {}
        assert len(now["triggers"]) == 7 and len(now["functions"]) == 9  # not vacuous
        # The squashed migrations were only recorded, not run (what came since ran).
        recorded = [
            row[0]
            for row in _rows(
                old_conn, "SELECT name FROM django_migrations WHERE app = 'pgjobs' ORDER BY id"
            )
        ]
        # The 13 of the old history, then the squash (recorded) and what came since.
        squash = ["0001_tables", "0002_database_triggers"]
        assert sorted(recorded[13:]) == sorted(squash + MIGRATIONS_AFTER_SQUASH)
        assert _rows(old_conn, "SELECT task, state FROM pgjobs_job") == [
            ("tests.tasks_for_tests.add", "available")
        ]
        # And its triggers still refuse a forbidden move.
        with pytest.raises(psycopg.errors.CheckViolation, match="cannot go from"):
            old_conn.execute("UPDATE pgjobs_job SET state = 'completed'")
    assert migrated(old.manage("migrate", "--check", "pgjobs", "--plan")).returncode == 0


def test_the_database_runs_the_functions_of_the_sql_files():
    """What the newest SQL file defining each function says is what the database runs."""
    defined: dict[str, str] = {}
    for path in sorted(SQL_DIR.glob("[0-9]*.sql")):
        if path.name.endswith(".reverse.sql"):
            continue
        text = path.read_text()
        for name in re.findall(r"^DROP FUNCTION (\w+)\(", text, re.M):  # a later file's drop
            defined.pop(name)
        for name, body in re.findall(
            r"CREATE (?:OR REPLACE )?FUNCTION (\w+)\(.*?\$\$(.*?)\$\$;", text, re.S
        ):
            defined[name] = body
    connection.ensure_connection()
    in_database = {
        signature.split("(")[0]: details[-1]
        for signature, details in functions(connection.connection).items()
    }
    assert in_database.keys() == defined.keys()
    for name, body in defined.items():
        assert in_database[name] == body, name


def test_the_database_has_the_tables_columns_indexes_and_constraints_of_the_models():
    """The models' tables as the database has them (makemigrations --check says the
    migrations agree with the models; this says the database agrees with both)."""
    connection.ensure_connection()
    found = schema(connection.connection)
    tables = {row[0] for row in found["tables"] if row[1] == "r"}
    columns = {(row[0], row[1]) for row in found["columns"]}
    named = {row[0] for row in found["indexes"]} | {row[1] for row in found["constraints"]}
    models = list(apps.get_app_config("pgjobs").get_models())
    assert tables == {model._meta.db_table for model in models}
    assert columns == {
        (model._meta.db_table, field.column)
        for model in models
        for field in model._meta.local_concrete_fields
    }
    declared = {
        item.name for model in models for item in [*model._meta.indexes, *model._meta.constraints]
    }
    assert declared <= named, declared - named
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'pgjobs_job'")
        assert cursor.fetchone()[0] == [
            "fillfactor=70",
            "autovacuum_vacuum_scale_factor=0.02",
            "autovacuum_analyze_scale_factor=0.02",
        ]


# -- PostgreSQL only --------------------------------------------------------------------


def _sqlite_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master")}


def _sqlite_pgjobs_migrations(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT name FROM django_migrations WHERE app='pgjobs'")]


def test_migrate_refuses_sqlite_before_applying_anything(tmp_path):
    database = tmp_path / "db.sqlite3"
    result = manage("migrate", "--skip-checks", PGJOBS_TEST_SQLITE=str(database))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "PostgreSQLRequired: Migrating the database 'default': DATABASES['default'] uses " in (
        result.stderr
    )
    assert "'django.db.backends.sqlite3'" in result.stderr
    assert "set its ENGINE to 'django.db.backends.postgresql'" in result.stderr
    assert "No pgjobs migration was applied." in result.stderr
    assert not {name for name in _sqlite_tables(database) if name.startswith("pgjobs")}
    assert _sqlite_pgjobs_migrations(database) == []


def test_check_and_migrate_on_sqlite_fail_with_the_fix_and_apply_nothing(tmp_path):
    """What a fresh startproject (SQLite) gets: the system check names the fix, and
    migrate, which runs the checks first, stops before applying anything at all."""
    database = tmp_path / "db.sqlite3"
    checked = manage("check", PGJOBS_TEST_SQLITE=str(database))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "pgjobs.E042" in checked.stderr and "pgjobs needs PostgreSQL" in checked.stderr
    assert checked.stderr.count("needs PostgreSQL") == 1  # it said so twice in one line
    assert "set its ENGINE to 'django.db.backends.postgresql'" in checked.stderr
    migrated = manage("migrate", PGJOBS_TEST_SQLITE=str(database))
    assert migrated.returncode == 1 and "pgjobs.E042" in migrated.stderr
    assert not database.exists() or not _sqlite_tables(database)


def test_migrate_refuses_when_pgjobs_database_is_not_postgresql(tmp_path):
    with Scratch("jobs_alias") as scratch:
        result = scratch.manage(
            "migrate", "--skip-checks", "pgjobs", PGJOBS_TEST_SQLITE_JOBS=str(tmp_path / "j.db")
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "PGJOBS['DATABASE'] is 'jobs': DATABASES['jobs'] uses " in result.stderr
        assert "Migrating the database 'default'" not in result.stderr
        with scratch.connect() as conn:
            assert _rows(conn, "SELECT relname FROM pg_class WHERE relname LIKE 'pgjobs%'") == []
            assert _rows(conn, "SELECT name FROM django_migrations WHERE app = 'pgjobs'") == []


def test_the_refusal_names_an_alias_that_does_not_exist(settings):
    from django_pgjobs.postgres import PostgreSQLRequired, require_postgresql

    settings.PGJOBS = {**settings.PGJOBS, "DATABASE": "jobz"}
    with pytest.raises(PostgreSQLRequired, match="The database alias 'jobz' is not in DATABASES"):
        require_postgresql("default")
    settings.PGJOBS = {**settings.PGJOBS, "DATABASE": "default"}
    require_postgresql("default")  # PostgreSQL: nothing to say


def test_enqueue_on_sqlite_raises_the_fix_not_an_attributeerror(tmp_path):
    """A project that skipped `check` and `migrate` and enqueued on its SQLite default
    got "'sqlite3.Connection' object has no attribute 'prepare_threshold'"."""
    code = (
        "from django_pgjobs import Job\n"
        "spec = {'task': 'testproject.demo.tasks.add', 'args': [1, 2]}\n"
        "for count in (1, 200):  # one INSERT, and COPY\n"
        "    try:\n"
        "        Job.enqueue_many([spec] * count)\n"
        "    except Exception as error:\n"
        "        print('refused:', type(error).__name__, error)\n"
    )
    result = manage("shell", "-c", code, PGJOBS_TEST_SQLITE=str(tmp_path / "db.sqlite3"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("refused: ")]
    assert len(lines) == 2, result.stdout
    for line in lines:
        assert line.startswith("refused: PostgreSQLRequired DATABASES['default'] uses "), line
        assert "set its ENGINE to 'django.db.backends.postgresql'" in line


def test_enqueue_on_an_alias_not_in_databases_names_it(settings):
    from django_pgjobs import Job
    from django_pgjobs.postgres import PostgreSQLRequired

    settings.PGJOBS = {**settings.PGJOBS, "DATABASE": "jobz"}
    with pytest.raises(PostgreSQLRequired, match="The database alias 'jobz' is not in DATABASES"):
        Job.enqueue("testproject.demo.tasks.add", args=[1, 2])


def test_0006_turns_misfire_into_catch_up_and_back(django_db_blocker):
    with django_db_blocker.unblock(), Scratch("misfire") as scratch:
        migrated(scratch.manage("migrate", "pgjobs", "0005", "-v", "0"))
        with scratch.connect() as conn:
            for name, misfire in (("kept", "catch_up"), ("dropped", "skip")):
                conn.execute(
                    "INSERT INTO pgjobs_schedule (name, cron, timezone, task, args, kwargs,"
                    " queue, enabled, misfire, created_at, updated_at) VALUES"
                    " (%s, '* * * * *', 'UTC', 'x.y', '[]', '{}', '', true, %s, now(), now())",
                    (name, misfire),
                )
        migrated(scratch.manage("migrate", "pgjobs", "0006", "-v", "0"))
        query = "SELECT name, catch_up, overlap, jitter FROM pgjobs_schedule ORDER BY name"
        with scratch.connect() as conn:
            assert _rows(conn, query) == [
                ("dropped", "none", "allow", 0),
                ("kept", "latest", "allow", 0),
            ]
            conn.execute("UPDATE pgjobs_schedule SET catch_up = 'all' WHERE name = 'kept'")
        migrated(scratch.manage("migrate", "pgjobs", "0005", "-v", "0"))
        with scratch.connect() as conn:
            rows = _rows(conn, "SELECT name, misfire FROM pgjobs_schedule ORDER BY name")
            assert rows == [("dropped", "skip"), ("kept", "catch_up")]


# -- commands on a database never migrated ------------------------------------------------


def test_commands_on_an_unmigrated_database_say_to_migrate_not_a_traceback():
    # A newcomer's first `runworker` before `migrate` printed 78 lines of traceback
    # ending in 'relation "pgjobs_queue" does not exist'.
    with Scratch("unmigrated") as scratch:
        for command in (
            ["runworker", "--burst"],
            ["runworker", "--burst", "--processes", "2"],
            ["runworker", "--burst", "--queues", "default"],
            ["runscheduler", "--once"],
            ["pgjobs", "stats"],
            ["issue_api_token", "ci", "--queues", "default"],
            ["stopworker", "--all"],
            ["rotate_connector_secrets"],
        ):
            result = scratch.manage(*command)
            said = result.stdout + result.stderr
            assert result.returncode == 1, (command, said)
            assert "Traceback" not in said, (command, said)
            assert f"The database '{scratch.name}' lacks pgjobs' tables" in result.stderr
            assert "migration(s) of pgjobs are not applied (0001_tables," in result.stderr
            assert "Run `python manage.py migrate` first." in result.stderr, command
            # runworker's start-up warning named every migration: a line of two dozen.
            named = [len(re.findall(r"\b\d{4}_\w+", line)) for line in said.splitlines()]
            assert max(named) <= 2, (command, said)
            # Nor a second warning, with PostgreSQL's 'relation "pgjobs_queue" does not
            # exist' and "The worker runs on.", just before it stopped.
            assert "could not compare PGJOBS['QUEUES']" not in said, (command, said)
            assert "...." not in said, (command, said)  # the list's "..." ran into a "."
        with scratch.connect() as conn:  # the commands wrote nothing
            assert _rows(conn, "SELECT relname FROM pg_class WHERE relname LIKE 'pgjobs%'") == []


def test_commands_without_their_database_say_what_to_check_not_a_traceback():
    # A newcomer's first runworker before createdb printed 105 lines of traceback
    # ending in libpq's 'database "mysite" does not exist'; with no server on the
    # port, 107 ending in 'Connection refused'.
    missing = Scratch("never_created")  # not entered: its database is never made
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    parts = urlsplit(missing.url)
    closed = parts._replace(netloc=f"{parts.username or ''}@127.0.0.1:{port}").geturl()
    for url, said in (
        (missing.url, f'database "{missing.name}" does not exist'),
        (closed, "Connection refused"),
    ):
        for command in (
            ["runworker", "--burst"],
            ["runworker", "--burst", "--processes", "2"],
            ["runscheduler", "--once"],
            ["pgjobs", "stats"],
            ["issue_api_token", "ci", "--queues", "default"],
            ["stopworker", "--all"],
            ["rotate_connector_secrets"],
        ):
            result = manage(*command, DATABASE_URL=url)
            output = result.stdout + result.stderr
            assert result.returncode == 1, (command, output)
            assert "Traceback" not in output, (command, output)
            assert "Can't connect to database 'default': " in result.stderr, (command, output)
            assert said in result.stderr, (command, output)
            assert "Check DATABASES['default'] (NAME, HOST, PORT" in result.stderr, command


ENQUEUE_UNMIGRATED = """
from django.db import DatabaseError, transaction
from django_pgjobs import Job

def said(enqueue):
    try:
        enqueue()
    except DatabaseError as error:
        print(type(error).__name__, "|", error)

add = "testproject.demo.tasks.add"
said(lambda: Job.enqueue(add, args=[1, 2]))
with transaction.atomic():  # the error aborted this transaction: explained all the same
    said(lambda: Job.enqueue(add, args=[1, 2]))
said(lambda: Job.enqueue_many([{"task": add, "args": [n, 1]} for n in range(150)]))
"""


def test_enqueue_on_an_unmigrated_database_says_to_migrate():
    # A newcomer's enqueue before `migrate` read 'function pgjobs_insert_job(unknown,
    # ...) does not exist', with PostgreSQL's hint to add explicit type casts.
    with Scratch("unmigrated_enqueue") as scratch:
        result = scratch.manage("shell", "-c", ENQUEUE_UNMIGRATED)
        lines = [line for line in result.stdout.splitlines() if "|" in line]
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(lines) == 3, result.stdout + result.stderr
        for line in lines:
            assert line.startswith("ProgrammingError | "), line
            assert f"The database '{scratch.name}' lacks pgjobs' tables" in line
            assert "Run `python manage.py migrate` first. (PostgreSQL said: " in line
        assert "pgjobs_insert_job" in lines[0]
        with scratch.connect() as conn:
            assert _rows(conn, "SELECT relname FROM pg_class WHERE relname LIKE 'pgjobs%'") == []


def test_other_database_errors_are_not_explained_as_unmigrated():
    from django.db import ProgrammingError

    from django_pgjobs import unmigrated

    class Duplicate(Exception):
        sqlstate = "23505"

    class UndefinedTable(Exception):
        sqlstate = "42P01"

    other = ProgrammingError("duplicate key")
    other.__cause__ = Duplicate()
    assert unmigrated.explain(other, "default") is None
    # A missing table of a migrated database is someone else's: pgjobs has none pending.
    missing = ProgrammingError('relation "shop_order" does not exist')
    missing.__cause__ = UndefinedTable()
    assert unmigrated.pending("default") == []
    assert unmigrated.explain(missing, "default") is None
    with pytest.raises(ProgrammingError), unmigrated.required("default"):
        raise missing


def test_a_migration_graph_that_cannot_be_read_leaves_the_database_error_as_it_is(monkeypatch):
    from django.db import ProgrammingError
    from django.db.migrations.exceptions import NodeNotFoundError

    from django_pgjobs import unmigrated

    def broken(alias):
        raise NodeNotFoundError("dependency of a missing migration", ("shop", "0002"))

    class UndefinedTable(Exception):
        sqlstate = "42P01"

    monkeypatch.setattr(unmigrated, "pending", broken)
    missing = ProgrammingError('relation "pgjobs_queue" does not exist')
    missing.__cause__ = UndefinedTable()
    assert unmigrated.explain(missing, "default") is None
    with pytest.raises(ProgrammingError, match="pgjobs_queue"), unmigrated.required("default"):
        raise missing
