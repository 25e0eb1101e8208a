"""What each system's enqueue statement costs the server alone, without its client.

    .venv/bin/python bench/insert_cost.py [--seconds 6] [--rounds 3]

W1a's time per job is the client's Python, the server's work and the commit's WAL
flush, one after another (enqueue_cost.py reads the first two). This takes the client
away: pgbench (C, libpq, prepared statements, one client, one statement per
transaction) sends the statement each system's enqueue of a no-op job sends -- ours
``sql/insert_job.sql`` as ``Job.enqueue("noop")`` fills it, pgqueuer's from its own
query builder with the arrays of its ``enqueue("noop", None)`` -- and a plain one-row
INSERT (run.py's insert1, the floor of any enqueue). Each twice: with every commit
waiting for its WAL flush, as in W1a, and with ``synchronous_commit`` off for the
session, which leaves the server's CPU and the round trip. Ours once more with its
events off (``pgjobs.events``, as ``PGJOBS["EVENTS"] = False`` sets it). The
statements take turns in each round, each on its system's fresh database as its
installer made it (pgqueuer's with its `autovac` settings, as run.py installs it);
the medians of the rounds are printed in microseconds per transaction.

``--pieces`` prices the job table's parts the same way, by a plain one-row INSERT of a
no-op job's values (as ``Job.enqueue`` fills them) into copies of the table built up
part by part: its columns and primary key alone, then with its CHECK constraints, its
other indexes, both, both and its AFTER INSERT trigger (without its UPDATE
triggers, which an INSERT never fires), and the job table itself. Each copy takes the
table's storage settings. The differences say what each part costs one enqueue.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH / "runners"), str(BENCH), str(ROOT)]

from common import (  # noqa: E402
    DEFAULT_URL,
    database_name,
    drop_database,
    libpq_env,
    recreate_database,
    with_database,
)
from run import FLUSH_PROBE, PLAIN_INSERT, SYSTEMS, migrated_database, venv_python  # noqa: E402

#: What Job.enqueue("pgjobs_tasks.noop") passes to sql/insert_job.sql (run_at and
#: created_at are its clock's now: now() here, of the same type).
OUR_VALUES = {
    "task": "'pgjobs_tasks.noop'",
    "queue": "'default'",
    "args": "'[]'",
    "kwargs": "'{}'",
    "state": "'available'",
    "priority": "0",
    "max_attempts": "20",
    "timeout": "NULL",
    "run_at": "now()",
    "created_at": "now()",
    "unique_key": "NULL",
    "connector": "NULL",
    "pending_dependencies": "0",
    "meta": "'{}'",
}

#: pgqueuer's enqueue("noop", None): priority 0, no payload, no delay, no dedupe key,
#: no headers, one element each ($1..$6 of its enqueue query, in order).
PGQUEUER_ARRAYS = [
    "'{0}'::int[]",
    "'{noop}'::text[]",
    "'{NULL}'::bytea[]",
    "'{\"0 seconds\"}'::interval[]",
    "'{NULL}'::text[]",
    "'{NULL}'::jsonb[]",
]


def one_line(sql: str) -> str:
    """``sql`` without comments, on one line: pgbench reads a statement per line."""
    return " ".join(" ".join(line.split("--")[0] for line in sql.splitlines()).split())


def our_statement() -> str:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pgjobs_settings")
    from django_pgjobs.db import statement

    text = statement("insert_job")
    for name, value in OUR_VALUES.items():
        text = text.replace(f"%({name})s", value)
    return one_line(text) + ";"


def pgqueuer_statement(python: str) -> str:
    query = subprocess.run(
        [
            python,
            "-c",
            "from pgqueuer.adapters.persistence.qb import QueryQueueBuilder;"
            "print(QueryQueueBuilder().build_enqueue_query())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for number, value in reversed(list(enumerate(PGQUEUER_ARRAYS, 1))):
        query = re.sub(rf"\${number}(::\w+\[\])?", value, query)
    return one_line(query) + ";"


def install_ours(url: str) -> None:
    migrated_database(url)
    psql(url, FLUSH_PROBE)  # insert1's table, beside ours


#: The copies of the job table for --pieces: (name, LIKE options, more DDL).
PIECES = [
    ("columns + primary key", "INCLUDING DEFAULTS INCLUDING IDENTITY", "pkey"),
    ("+ CHECKs", "INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS", "pkey"),
    ("+ indexes", "INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES", ""),
    ("+ CHECKs + indexes", "INCLUDING ALL", ""),
    ("+ insert trigger", "INCLUDING ALL", "trigger"),
]

#: A no-op job's columns as Job.enqueue fills them (OUR_VALUES, the columns the
#: insert function fills itself with their first values).
PIECE_COLUMNS = {
    **{name: value for name, value in OUR_VALUES.items() if value != "NULL"},
    "attempt": "0",
    "errors": "'[]'",
}


def piece_insert(table: str) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(PIECE_COLUMNS)})"
        f" VALUES ({', '.join(PIECE_COLUMNS.values())});"
    )


def install_pieces(url: str) -> dict[str, str]:
    """The copies of PIECES beside the migrated job table: name -> its INSERT."""
    import psycopg

    inserts = {}
    with psycopg.connect(url, autocommit=True) as conn:
        (options,) = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'pgjobs_job'"
        ).fetchone()
        for number, (name, like, more) in enumerate(PIECES):
            table = f"job_piece_{number}"
            conn.execute(f"CREATE TABLE {table} (LIKE pgjobs_job {like})")
            if options:
                conn.execute(f"ALTER TABLE {table} SET ({', '.join(options)})")
            if more == "pkey":
                conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
            if more == "trigger":  # the job table's, on this copy
                (definition,) = conn.execute(
                    "SELECT pg_get_triggerdef(oid) FROM pg_trigger"
                    " WHERE tgrelid = 'pgjobs_job'::regclass AND tgname = 'pgjobs_job_inserted'"
                ).fetchone()
                conn.execute(definition.replace(" ON public.pgjobs_job ", f" ON {table} "))
            inserts[name] = piece_insert(table)
    inserts["the job table"] = piece_insert("pgjobs_job")
    return inserts


def install_pgqueuer(url: str, python: str) -> None:
    recreate_database(url)
    for command in ("install", "autovac"):
        subprocess.run(
            [python, "-m", "pgqueuer", command],
            env={**os.environ, **libpq_env(url)},
            check=True,
            capture_output=True,
        )


def psql(url: str, sql: str) -> None:
    subprocess.run(
        ["psql", "-qX", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env={**os.environ, **libpq_env(url)},
        check=True,
        capture_output=True,
    )


def latency_us(url: str, script: str, seconds: int, options: str = "") -> float:
    """Microseconds per transaction of ``script`` run by one pgbench client."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as file:
        file.write(script + "\n")
    try:
        out = subprocess.run(
            ["pgbench", "-n", "-M", "prepared", "-c", "1", "-T", str(seconds), "-f", file.name],
            env={**os.environ, **libpq_env(url), "PGOPTIONS": options},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(file.name)
    return 1e6 / float(re.search(r"tps = ([\d.]+)", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument(
        "--pieces", action="store_true", help="price the job table's parts (see above)"
    )
    args = parser.parse_args()
    if args.pieces:
        pieces(args)
        return
    base = database_name(args.url)
    ours = with_database(args.url, f"{base}_bench_insert_pgjobs_{os.getpid()}")
    theirs = with_database(args.url, f"{base}_bench_insert_pgqueuer_{os.getpid()}")
    python = venv_python("pgqueuer", SYSTEMS["pgqueuer"][1])
    try:
        install_ours(ours)
        install_pgqueuer(theirs, python)
        runs = {
            "ours": (ours, our_statement(), ""),
            "ours, events off": (ours, our_statement(), "-c pgjobs.events=off"),
            "pgqueuer": (theirs, pgqueuer_statement(python), ""),
            "plain INSERT": (ours, PLAIN_INSERT, ""),
        }
        report(runs, args)
    finally:
        drop_database(ours)
        drop_database(theirs)


def pieces(args: argparse.Namespace) -> None:
    ours = with_database(args.url, f"{database_name(args.url)}_bench_pieces_{os.getpid()}")
    try:
        install_ours(ours)
        runs = {"plain INSERT": (ours, PLAIN_INSERT, "")}
        for name, insert in install_pieces(ours).items():
            runs[name] = (ours, insert, "")
        runs["ours (Job.enqueue's)"] = (ours, our_statement(), "")
        report(runs, args)
    finally:
        drop_database(ours)


def report(runs: dict[str, tuple[str, str, str]], args: argparse.Namespace) -> None:
    modes = {"flush": "", "no flush": "-c synchronous_commit=off"}
    figures: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        order = list(runs) if round_ % 2 == 0 else list(runs)[::-1]
        for mode, mode_options in modes.items():
            for name in order:
                url, script, options = runs[name]
                us = latency_us(url, script, args.seconds, f"{options} {mode_options}".strip())
                figures.setdefault((name, mode), []).append(us)
                load = os.getloadavg()[0]
                print(f"round {round_ + 1} {mode:8} {name:22} {us:6.1f} us  load {load:.1f}")
    print("median us per transaction (flush / no flush):")
    for name in runs:
        flush, no_flush = (statistics.median(figures[name, mode]) for mode in modes)
        print(f"  {name:22} {flush:6.1f} / {no_flush:6.1f}")


if __name__ == "__main__":
    main()
