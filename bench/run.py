"""Benchmark django-pgjobs against its peers and PostgreSQL's own limit, side by side.

    python bench/run.py                 # everything: ours, the peers, the pgbench ceiling
    python bench/run.py --write-readme  # ... and put the results table in bench/README.md
    python bench/run.py --quick         # ours only, small sizes: a crash check for CI

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


def run_system(name: str, base_url: str, args: argparse.Namespace) -> dict[str, Any]:
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
        f"--each-jobs={args.each_jobs}",
        f"--latency-jobs={args.latency_jobs}",
        f"--reps={args.reps}",
        f"--configs={args.configs}",
    ]
    before = load()
    log(f"{name}: load {before}")
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} runner failed with exit code {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = f"{before} -> {load()}"
    return result


# -- the ceiling: pgbench on a plain copy of the job table ------------------------------


def claim_script(batch: int) -> str:
    """Our claim statement on the plain table, then the completion, as a pgbench script.

    The claim's rows are collected into an array (``\\gset``) by turning its UPDATE
    into one more CTE, so the script runs it unchanged but for what marks it for
    our events trigger (the plain table has no triggers).
    """
    text = (ROOT / "django_pgjobs" / "sql" / "claim.sql").read_text()
    text = "\n".join(line.split("--")[0] for line in text.splitlines())
    text = re.sub(r"WITH publisher AS \(.*?\),\s*", "WITH ", text, count=1, flags=re.S)
    text = text.replace(", publisher", "")
    for name, value in {
        "queue": "'default'",
        "limit": str(batch),
        "now": "now()",
        "worker_id": "NULL",
        "states": "ARRAY['available', 'scheduled', 'retryable']",
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


def prepare_ceiling(url: str) -> None:
    """The real job table (migrated), copied without its triggers into plain_job."""
    import psycopg

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
    with psycopg.connect(url, autocommit=True) as conn:
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'pgjobs_job'"
        ).fetchone()[0]
        conn.execute("CREATE TABLE plain_job (LIKE pgjobs_job INCLUDING ALL)")
        if options:
            conn.execute(f"ALTER TABLE plain_job SET ({', '.join(options)})")


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
    script = claim_script(batch)
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
                str(rows // (batch * clients)),
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
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    return tps * batch


def run_ceiling(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    url = with_database(base_url, f"{database_name(base_url)}_bench_ceiling_{os.getpid()}")
    before = load()
    log(f"pgbench ceiling: load {before}")
    prepare_ceiling(url)
    result: dict[str, Any] = {}
    for batch, rows in ((1, args.ceiling_rows // 10), (100, args.ceiling_rows)):
        runs = [ceiling(url, batch, rows, clients=2) for _ in range(args.reps)]
        log(f"pgbench batch {batch}: {[round(r) for r in runs]} jobs/s")
        result[f"batch_{batch}"] = statistics.median(runs)
    result["load"] = f"{before} -> {load()}"
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


def report(
    info: dict[str, str],
    results: list[dict[str, Any]],
    top: dict[str, Any] | None,
    args_jobs: int,
) -> str:
    lines = [
        f"Measured {info['date']} on {info['cpu']}, {info['postgres']}, {info['python']}.",
        "Medians of the repetitions; `load` is the 1/5/15-minute load average before -> after.",
        "",
        "| system | W1 enqueue, 1 per tx (jobs/s) | W1 bulk (jobs/s) | W2 drain (jobs/s)"
        " | W2 config | W3 p50 (ms) | W3 p99 (ms) | peak worker RSS, W2 config (MB) | load |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        scaled = f" ({r['jobs']:,} jobs)" if r.get("jobs", args_jobs) != args_jobs else ""
        lines.append(
            f"| {r['system']} {r['version']} | {fmt(r['w1_each'])} | {fmt(r['w1_bulk'])}"
            f" | {fmt(r['w2'])}{scaled} | {r['w2_config']} | {fmt(r.get('w3_p50_ms'), 'ms')}"
            f" | {fmt(r.get('w3_p99_ms'), 'ms')} | {fmt(r['rss_mb'])} | {r['load']} |"
        )
    lines += [
        "",
        "W2 drain by worker configuration (processes x concurrency): jobs/s (peak RSS, MB):",
        "",
    ]
    for r in results:
        configs = ", ".join(
            f"{label}: {fmt(value)} ({fmt(r['rss_all'][label])})"
            for label, value in r["w2_all"].items()
        )
        lines.append(f"- {r['system']}: {configs}")
    if top:
        lines += [
            "",
            "| pgbench ceiling: claim + complete on a plain copy of the job table, 2 clients"
            " | jobs/s | load |",
            "| --- | ---: | --- |",
            f"| 1 job per claim | {fmt(top['batch_1'])} | {top['load']} |",
            f"| 100 jobs per claim | {fmt(top['batch_100'])} | |",
        ]
    ours = next((r for r in results if r["system"] == "django-pgjobs"), None)
    if ours:
        ratios = []
        for r in results:
            if r is not ours and r["w2"]:
                ratios.append(f"{ours['w2'] / r['w2']:.1f}x {r['system']}")
        if top:
            ratios.append(f"{100 * ours['w2'] / top['batch_100']:.0f}% of the 100-job ceiling")
        if ratios:
            lines += ["", "django-pgjobs W2 drain: " + ", ".join(ratios) + "."]
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = BENCH / "README.md"
    content = readme.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    before, _, rest = content.partition(start)
    _, _, after = rest.partition(end)
    readme.write_text(f"{before}{start}\n{text}\n{end}{after}")
    log(f"results written to {readme}")


DEFAULT_URL = "postgres://root@127.0.0.1:5432/pgjobs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ours only, tiny sizes (CI)")
    parser.add_argument("--only", default="", help="comma-separated systems (default: all)")
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument("--jobs", type=int, default=10_000, help="W1 bulk and W2 jobs")
    parser.add_argument("--each-jobs", type=int, default=10_000, help="W1 one-per-tx jobs")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--configs", type=int, default=0, help="W2: first N configs only")
    parser.add_argument("--ceiling-rows", type=int, default=200_000)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    base_url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    systems = [s for s in args.only.split(",") if s] or list(SYSTEMS)
    if args.quick:
        systems, args.no_ceiling = ["pgjobs"], True
        args.jobs, args.each_jobs, args.latency_jobs, args.reps, args.configs = 300, 100, 20, 1, 1
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; known: {sorted(SYSTEMS)}")

    started = time.monotonic()
    results = [run_system(name, base_url, args) for name in systems]
    top = None
    if not args.no_ceiling:
        if shutil.which("pgbench"):
            top = run_ceiling(base_url, args)
        else:
            log("pgbench not found: no ceiling")
    text = report(machine(), results, top, args.jobs)
    print(text)
    log(f"done in {time.monotonic() - started:.0f}s")
    if args.write_readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
