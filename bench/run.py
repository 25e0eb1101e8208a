"""Benchmark django-pgjobs against its peers and PostgreSQL's own limit, side by side.

    python bench/run.py                 # everything: ours, the peers, the pgbench ceiling
    python bench/run.py --write-readme  # ... and put the results table in bench/README.md
    python bench/run.py --quick         # ours only, tiny sizes and ceiling: a crash check for CI

Each peer (procrastinate, pgqueuer, django-tasks-db) is installed from PyPI into
a virtualenv of its own under bench/.venvs, at a pinned version, and runs the
same workloads (bench/common.py) through a small runner in bench/runners/.
Every system gets a fresh database of its own on the same server, named after
the database of $DATABASE_URL.

Run this with the project's interpreter (.venv/bin/python, as ./dev does): it
needs psycopg and the project for the pgbench ceiling.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from common import (  # noqa: E402
    database_name,
    drop_database,
    libpq_env,
    recreate_database,
    with_database,
)

VENVS = BENCH / ".venvs"

#: name -> (runner script, packages to install in its own virtualenv or None for ours)
SYSTEMS: dict[str, tuple[str, list[str] | None]] = {
    "pgjobs": ("pgjobs_runner.py", None),
    "procrastinate": ("procrastinate_runner.py", ["procrastinate==3.10.0", "psycopg[binary]"]),
    "pgqueuer": ("pgqueuer_runner.py", ["pgqueuer==1.6.0", "asyncpg", "uvloop", "psycopg[binary]"]),
    "django-tasks-db": (
        "djtasks_runner.py",
        ["django-tasks-db==0.13.0", "django>=6.0", "psycopg[binary]"],
    ),
}


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def venv_python(name: str, packages: list[str] | None) -> str:
    """The interpreter of the system's own virtualenv, made (once) if needed."""
    if packages is None:
        return sys.executable
    venv = VENVS / name
    stamp = venv / ".bench-installed"
    wanted = "\n".join(packages)
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        log(f"installing {' '.join(packages)} into {venv}")
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
            check=True,
        )
        stamp.write_text(wanted)
    return str(python)


def run_system(
    name: str, base_url: str, args: argparse.Namespace, *extra: str
) -> dict[str, Any] | None:
    """One run of a system's runner (a fresh database); its JSON result, with the load."""
    script, packages = SYSTEMS[name]
    python = venv_python(name, packages)
    url = with_database(
        base_url, f"{database_name(base_url)}_bench_{name.replace('-', '_')}_{os.getpid()}"
    )
    command = [
        python,
        str(BENCH / "runners" / script),
        f"--url={url}",
        f"--jobs={args.jobs}",
        f"--large-jobs={args.large_jobs}",
        f"--each-jobs={args.each_jobs}",
        f"--latency-jobs={args.latency_jobs}",
        f"--w4-rate={args.w4_rate}",
        *extra,
    ]
    before = os.getloadavg()[0]
    log(f"{name} {' '.join(extra)}: load {load()}")
    done = None
    try:
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    finally:
        if done is None or done.returncode != 0:
            drop_left_behind(url)  # the runner drops it, unless killed or interrupted
    if done.returncode != 0:
        if args.quick or args.tune:
            raise SystemExit(f"{name} runner failed with exit code {done.returncode}")
        # One failed run must not lose a long interleaved run: its pair is left out.
        log(f"{name} runner failed with exit code {done.returncode}: pair left out")
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = (before + os.getloadavg()[0]) / 2
    return result


def drop_left_behind(url: str) -> None:
    """Drop a failed runner's database if it is still there; a failure to is logged, as
    one failed run must not end a long interleaved run."""
    try:
        drop_database(url)
    except Exception as error:
        log(f"could not drop the database {database_name(url)}: {error}")


# -- the ceiling: pgbench on a plain copy of the job table ------------------------------


def claim_script(batch: int) -> str:
    """Our claim statement on the plain table, then the completion, as a pgbench script.

    The claim's rows are collected into an array (``\\gset``) by turning its UPDATE
    into one more CTE, so the script runs it unchanged but for what marks it for
    our events trigger (the plain table has no triggers).
    """
    from django_pgjobs.db import statement
    from django_pgjobs.loaded import INLINE_BYTES

    text = statement("claim")  # its included fragments too
    text = "\n".join(line.split("--")[0] for line in text.splitlines())
    text = re.sub(r"WITH publisher AS \(.*?\),\s*", "WITH ", text, count=1, flags=re.S)
    text = text.replace(", publisher", "")
    text = re.sub(r"^FROM publisher$", "", text, flags=re.M)  # publisher was its only source
    for name, value in {
        "queue": "'default'",
        "limit": str(batch),
        "now": "now()",
        "worker_id": "NULL",
        "states": "ARRAY['available', 'scheduled', 'retryable']",
        "most": "2000000",
        "inline": str(INLINE_BYTES),
    }.items():
        text = text.replace(f"%({name})s", value)
    text = text.replace("pgjobs_job", "plain_job")
    ctes, update = text.split("\nUPDATE ", 1)
    claim = " ".join(f"{ctes}, claimed AS (UPDATE {update})".split())
    return (
        f"{claim} SELECT coalesce(array_agg(id), '{{}}') AS ids FROM claimed \\gset\n"
        "UPDATE plain_job SET state = 'completed', finished_at = now(), lease = NULL,"
        " result = 'null' WHERE id = ANY(:ids::bigint[]) AND state = 'executing';\n"
    )


def migrated_database(url: str) -> None:
    """A fresh database at ``url`` with django-pgjobs' tables, as ``migrate`` makes them."""
    recreate_database(url)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "pgjobs_settings",
        "PYTHONPATH": os.pathsep.join([str(BENCH / "runners"), str(BENCH), str(ROOT)]),
    }
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], cwd=ROOT, env=env, check=True
    )


def prepare_ceiling(url: str) -> None:
    """The real job table (migrated), copied without its triggers into plain_job."""
    import psycopg

    migrated_database(url)
    with psycopg.connect(url, autocommit=True) as conn:
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'pgjobs_job'"
        ).fetchone()[0]
        conn.execute("CREATE TABLE plain_job (LIKE pgjobs_job INCLUDING ALL)")
        if options:
            conn.execute(f"ALTER TABLE plain_job SET ({', '.join(options)})")


def flush_ceiling(url: str, rows: int) -> float:
    """Transactions/s of one client inserting one small row per transaction: what W1a
    (one job per transaction, one client) can reach at best on this disk, each commit
    waiting for its WAL flush."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FLUSH_PROBE)
    return pgbench(url, PLAIN_INSERT + "\n", 1, rows)


#: The table of insert1, and the one-row INSERT it times.
FLUSH_PROBE = (
    "CREATE TABLE IF NOT EXISTS flush_probe"
    " (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, task text)"
)
PLAIN_INSERT = "INSERT INTO flush_probe (task) VALUES ('noop');"


def pgbench(url: str, script: str, clients: int, transactions: int) -> float:
    """Transactions/s of ``script`` run by ``clients``, ``transactions`` each, prepared."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as file:
        file.write(script)
    try:
        out = subprocess.run(
            [
                "pgbench",
                "-n",
                "-M",
                "prepared",
                "-c",
                str(clients),
                "-j",
                str(clients),
                "-t",
                str(transactions),
                "-f",
                file.name,
            ],
            env={**os.environ, **libpq_env(url)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(file.name)
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


def ceiling(url: str, batch: int, rows: int, clients: int) -> float:
    """Jobs/s of claim (one transaction) + complete (another), ``batch`` jobs at a time."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE plain_job")
        conn.execute(
            "INSERT INTO plain_job (task, queue, args, kwargs, state, priority, attempt,"
            " max_attempts, run_at, created_at, errors, meta, pending_dependencies)"
            " SELECT 'noop', 'default', '[]', '{}', 'available', 0, 0, 20, now(), now(),"
            " '[]', '{}', 0 FROM generate_series(1, %s)",
            [rows],
        )
        conn.execute("VACUUM ANALYZE plain_job")
    tps = pgbench(url, claim_script(batch), clients, rows // (batch * clients))
    return tps * batch


def run_ceiling(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    url = with_database(base_url, f"{database_name(base_url)}_bench_ceiling_{os.getpid()}")
    before = os.getloadavg()[0]
    log(f"pgbench ceiling: load {load()}")
    try:
        prepare_ceiling(url)
        result: dict[str, Any] = {}
        for batch, rows in ((1, args.ceiling_rows // 10), (100, args.ceiling_rows)):
            result[f"batch_{batch}"] = ceiling(url, batch, rows, clients=2)
            log(f"pgbench batch {batch}: {result[f'batch_{batch}']:,.0f} jobs/s")
        result["insert_1"] = flush_ceiling(url, args.each_jobs)
        log(f"pgbench insert 1: {result['insert_1']:,.0f} rows/s")
        result["load"] = (before + os.getloadavg()[0]) / 2
    finally:  # a failure part way (pgbench, a claim.sql it can't run) left it behind
        drop_database(url)
    return result


# -- the report ---------------------------------------------------------------------------


def machine() -> dict[str, str]:
    import psycopg

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    with psycopg.connect(os.environ.get("DATABASE_URL", DEFAULT_URL), dbname="postgres") as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "postgres": f"PostgreSQL {server.split()[0]} (synchronous_commit={commit})",
        "python": f"Python {platform.python_version()}",
    }


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value:.1f}"
    return f"{value:,.0f}"


#: The figures compared per pair: (result key, heading, higher is better).
COMPARED = [
    ("w1_each", "W1a enqueue, 1 per tx (jobs/s)", True),
    ("w1_bulk", "W1b bulk (jobs/s)", True),
    ("w2_steady_per_s", "W2 drain, steady (jobs/s)", True),
    ("w2_jobs_per_s", "W2 drain, whole (jobs/s)", True),
    ("w2l_steady_per_s", "W2 large backlog, steady (jobs/s)", True),
    ("w2l_jobs_per_s", "W2 large backlog, whole (jobs/s)", True),
    ("w3_p50_ms", "W3 p50 (ms)", False),
    ("w3_p99_ms", "W3 p99 (ms)", False),
    ("w2_rss_mb", "peak worker RSS in W2 (MB)", False),
]


def ratio(ours: float | None, peer: float | None) -> float | None:
    return ours / peer if ours and peer else None


def pair_cell(ours: float | None, peer: float | None, unit: str) -> str:
    r = ratio(ours, peer)
    return f"{fmt(ours, unit)} / {fmt(peer, unit)} = {r:.2f}" if r else "n/a"


def report(info: dict[str, str], rounds: list[dict[str, Any]]) -> str:
    """Per-round tables, one per peer: ours / peer = ratio of each adjacent pair."""
    lines = [
        f"Measured {info['date']} on {info['cpu']}, {info['postgres']}, {info['python']}.",
        f"{len(rounds)} rounds. In each round every peer ran right after or right before"
        " django-pgjobs (the order alternates between rounds); each cell is"
        " ours / peer = ratio of that adjacent pair, `load` the 1-minute load average"
        " during the pair. Ratios above 1 are better for django-pgjobs, except for the"
        " ms and MB columns (lower is better there).",
    ]
    ours_name = "django-pgjobs"
    peers: list[str] = []
    for rnd in rounds:
        for pair in rnd["pairs"]:
            if pair["peer"]["system"] not in peers:
                peers.append(pair["peer"]["system"])
    for peer in peers:
        pairs = [
            (i + 1, pair)
            for i, rnd in enumerate(rounds)
            for pair in rnd["pairs"]
            if pair["peer"]["system"] == peer
        ]
        first = pairs[0][1]
        lines += [
            "",
            f"**{ours_name} {first['ours']['version']} ({first['ours'].get('w2_config', 'no W2')})"
            f" vs {peer} {first['peer']['version']} ({first['peer'].get('w2_config', 'no W2')})**"
            + (
                f"; {peer} drained {first['peer']['jobs']:,} jobs (ours"
                f" {first['ours']['jobs']:,})"
                + (
                    f" and enqueued {first['peer']['each_jobs']:,} one by one"
                    if "each_jobs" in first["peer"]
                    else ""
                )
                if first["peer"]["jobs"] != first["ours"]["jobs"]
                else ""
            )
            + (
                f"; W2 drains {first['ours']['jobs']:,} jobs, W2 large"
                f" {first['ours']['large_jobs']:,}"
                + (
                    f" ({peer} {first['peer']['large_jobs']:,})"
                    if first["peer"].get("large_jobs") != first["ours"]["large_jobs"]
                    else ""
                )
                if "large_jobs" in first["ours"]
                else ""
            ),
            "",
            "| round | first | load | " + " | ".join(h for _, h, _ in COMPARED) + " |",
            "| --- | --- | ---: | " + " | ".join("---:" for _ in COMPARED) + " |",
        ]
        for number, pair in pairs:
            cells = [
                pair_cell(pair["ours"].get(key), pair["peer"].get(key), "ms" if "ms" in key else "")
                for key, _, _ in COMPARED
            ]
            first_name = "ours" if pair["ours_first"] else peer
            lines.append(
                f"| {number} | {first_name} | {pair['load']:.1f} | " + " | ".join(cells) + " |"
            )
        medians = []
        for key, _, _ in COMPARED:
            ratios = [ratio(p["ours"].get(key), p["peer"].get(key)) for _, p in pairs]
            ratios = [r for r in ratios if r is not None]
            medians.append(f"**{statistics.median(ratios):.2f}**" if ratios else "n/a")
        lines.append("| median ratio | | | " + " | ".join(medians) + " |")
    w4_rows = [
        (i + 1, side, label, w4)
        for i, rnd in enumerate(rounds)
        for pair in rnd["pairs"]
        for side in ("ours", "peer")
        for label, w4 in pair[side].get("w4", {}).items()
    ]
    if w4_rows:
        offered = w4_rows[0][3]["offered"]
        lines += [
            "",
            f"**W4: {offered:,} jobs offered at a fixed rate while the workers drain**"
            " (end-to-end: from the commit of the bulk call that enqueued a job to its task"
            " starting; `late`: how long after the producer stopped the last job started)",
            "",
            "| round | system | configuration | max backlog | p50 (ms) | p99 (ms)"
            " | max (ms) | late (s) | peak RSS (MB) |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for number, side, label, w4 in w4_rows:
            system = next(
                pair[side]["system"]
                for pair in rounds[number - 1]["pairs"]
                if label in pair[side].get("w4", {})
            )
            lines.append(
                f"| {number} | {system} | {label} | {w4['max_backlog']:,} | {w4['p50_ms']:.1f}"
                f" | {w4['p99_ms']:.1f} | {w4['max_ms']:.1f} | {w4['done_late_s']:.2f}"
                f" | {w4['rss_mb']:.0f} |"
            )
            if w4.get("stamps_missing"):
                lines[-1] = lines[-1].replace(
                    f"| {label} |", f"| {label} ({w4['stamps_missing']} stamps lost) |"
                )
    ceilings = [(i + 1, rnd) for i, rnd in enumerate(rounds) if rnd.get("ceiling")]
    lines += claim_ceiling_table(ceilings)
    lines += flush_ceiling_table(ceilings)
    return "\n".join(lines)


def claim_ceiling_table(ceilings: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """Our W2 steady rate of each round against the claim ceiling of that round."""
    rows = [(n, rnd) for n, rnd in ceilings if rnd["ceiling_ours"].get("w2_steady_per_s")]
    if not rows:
        return []
    lines = [
        "",
        "**Ceiling: pgbench, 2 clients, our claim statement then the completion on a"
        " plain copy of the job table**, right after a run of ours in the same round;"
        " `% of claim100`: our W2 steady rate of that run over the 100-job ceiling",
        "",
        "| round | load | claim1 (jobs/s) | claim100 (jobs/s) | our W2 steady | % of claim100 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    shares = []
    for number, rnd in rows:
        top, ours = rnd["ceiling"], rnd["ceiling_ours"]
        share = 100 * ours["w2_steady_per_s"] / top["batch_100"]
        shares.append(share)
        lines.append(
            f"| {number} | {top['load']:.1f} | {fmt(top['batch_1'])}"
            f" | {fmt(top['batch_100'])} | {fmt(ours['w2_steady_per_s'])} | {share:.0f}% |"
        )
    lines.append(f"| median | | | | | **{statistics.median(shares):.0f}%** |")
    return lines


def flush_ceiling_table(ceilings: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """W1a of each system against the flush ceiling of its round."""
    rows = [(n, rnd) for n, rnd in ceilings if rnd["ceiling"].get("insert_1")]
    if not rows:
        return []
    lines = [
        "",
        "**Ceiling of W1a: pgbench, 1 client, one plain one-row INSERT per transaction**"
        " (each commit waits for its WAL flush, as every W1a job's does); each system's"
        " W1a in that round, and its share of the ceiling",
        "",
        "| round | load | insert1 (jobs/s) | system | W1a (jobs/s) | % of insert1 |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for number, rnd in rows:
        top = rnd["ceiling"]
        for side in [rnd["ceiling_ours"], *(pair["peer"] for pair in rnd["pairs"])]:
            if side.get("w1_each"):
                lines.append(
                    f"| {number} | {top['load']:.1f} | {fmt(top['insert_1'])} | {side['system']}"
                    f" | {fmt(side['w1_each'])} | {100 * side['w1_each'] / top['insert_1']:.0f}% |"
                )
    return lines


def _drains(count: int) -> str:
    return f"{count} drain" if count == 1 else f"{count} drains"


def tune_report(info: dict[str, str], results: list[dict[str, Any]]) -> str:
    """Every configuration of every system's sweep on W2; the best of each in bold."""
    lines = [
        f"Swept {info['date']} (`run.py --tune`, {_drains(results[0].get('reps', 1))} each,"
        " medians; the repetitions go round the configurations)"
        f" on {info['cpu']}; `load`: 1-minute load average during the system's sweep;"
        " **bold**: the configuration stored as the runner's `best`.",
        "",
        "| system | configuration | jobs | W2 steady (jobs/s) | W2 whole (jobs/s) | RSS (MB)"
        " | load |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for label, w2 in r["tune"].items():
            shown = f"**{label}**" if label == r["best"] else label
            lines.append(
                f"| {r['system']} | {shown} | {r['jobs']:,} | {fmt(w2['steady_per_s'])}"
                f" | {fmt(w2['jobs_per_s'])} | {fmt(w2['rss_mb'])} | {r['load']:.1f} |"
            )
    return "\n".join(lines)


def write_readme(text: str, block: str = "results") -> None:
    """Replace the README's block between ``<!-- block:start -->`` and its end."""
    readme = BENCH / "README.md"
    content = readme.read_text()
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    before, _, rest = content.partition(start)
    _, _, after = rest.partition(end)
    readme.write_text(f"{before}{start}\n{text}\n{end}{after}")
    log(f"results written to {readme}")


DEFAULT_URL = "postgres://root@127.0.0.1:5432/pgjobs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ours only, tiny sizes (CI)")
    parser.add_argument("--only", default="", help="comma-separated peers (default: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tune", action="store_true", help="sweep every system's W2 configs")
    parser.add_argument("--reps", type=int, default=1, help="--tune: drains per configuration")
    parser.add_argument(
        "--tune-configs", default="", help="--tune: only these labels, e.g. '4p x 500,4p x 1000'"
    )
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument("--jobs", type=int, default=20_000, help="W1b bulk and W2 jobs")
    parser.add_argument(
        "--large-jobs", type=int, default=200_000, help="W2 of a large backlog; 0: not run"
    )
    parser.add_argument("--each-jobs", type=int, default=3_000, help="W1a one-per-tx jobs")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--w4-rate", type=float, default=2000.0)
    parser.add_argument("--w4-seconds", type=float, default=30.0, help="0: no W4")
    parser.add_argument("--ceiling-rows", type=int, default=200_000)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument(
        "--workloads", default="", help="only these, e.g. w1 (default: all; no --write-readme)"
    )
    args = parser.parse_args()
    if args.workloads and args.write_readme:
        parser.error("--write-readme records every workload: leave --workloads out")
    base_url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    peers = [s for s in args.only.split(",") if s and (s != "pgjobs" or args.tune)] or [
        s for s in SYSTEMS if s != "pgjobs"
    ]
    if args.quick:
        peers, args.rounds, args.ceiling_rows = [], 1, 2_000
        args.jobs, args.each_jobs, args.latency_jobs = 300, 100, 20
        args.large_jobs = 600
        args.w4_rate, args.w4_seconds = 200, 1
    unknown = set(peers) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; known: {sorted(SYSTEMS)}")

    started = time.monotonic()
    if args.tune:
        results = [
            run_system(
                name,
                base_url,
                args,
                "--tune",
                "--workloads=",
                f"--reps={args.reps}",
                f"--tune-configs={args.tune_configs}",
            )
            for name in (peers if args.only else ["pgjobs", *peers])
        ]
        text = tune_report(machine(), results)
        print(text)
        log(f"done in {time.monotonic() - started:.0f}s")
        if args.write_readme:
            write_readme(text, "tune")
        return 0
    if args.quick:
        result = run_system("pgjobs", base_url, args, f"--w4-seconds={args.w4_seconds}")
        if not args.no_ceiling and shutil.which("pgbench"):
            # A few claims, so that a claim.sql the ceiling's script can't rewrite fails here.
            result["ceiling"] = run_ceiling(base_url, args)
        print(json.dumps(result, indent=1))
        return 0

    rounds = []
    for number in range(args.rounds):
        ours_first = number % 2 == 0
        rnd: dict[str, Any] = {"pairs": []}
        for peer in peers:
            # W4 compares us with pgqueuer only (the peers that keep up with 2,000/s).
            extra = [f"--w4-seconds={args.w4_seconds if peer == 'pgqueuer' else 0}"]
            if args.workloads:
                extra.append(f"--workloads={args.workloads}")
            before = os.getloadavg()[0]
            order = ["pgjobs", peer] if ours_first else [peer, "pgjobs"]
            ran = {name: run_system(name, base_url, args, *extra) for name in order}
            if None in ran.values():
                continue
            rnd["pairs"].append(
                {
                    "peer": ran[peer],
                    "ours": ran["pgjobs"],
                    "ours_first": ours_first,
                    "load": (before + os.getloadavg()[0]) / 2,
                }
            )
            rnd["ceiling_ours"] = ran["pgjobs"]
        if not args.no_ceiling and shutil.which("pgbench"):
            if "ceiling_ours" not in rnd:
                rnd["ceiling_ours"] = run_system("pgjobs", base_url, args, "--w4-seconds=0")
            if rnd["ceiling_ours"]:
                rnd["ceiling"] = run_ceiling(base_url, args)
        rounds.append(rnd)
        log(f"round {number + 1} done after {time.monotonic() - started:.0f}s")
    text = report(machine(), rounds)
    print(text)
    log(f"done in {time.monotonic() - started:.0f}s")
    if args.write_readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
