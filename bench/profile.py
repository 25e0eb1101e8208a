"""Where a draining django-pgjobs worker spends its time: py-spy, summarised.

    .venv/bin/python bench/profile.py [--jobs N] [--processes N] [--concurrency N] [--prefetch N]

Starts a worker on a fresh database, attaches py-spy (installed on first use
into bench/.venvs/tools), drains the jobs, and prints the functions with the
most samples, by own time and including callees. The raw stacks are kept in
bench/.work/profile.txt for a flame graph tool.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH / "runners"), str(BENCH)]

from common import (  # noqa: E402
    Config,
    drop_database,
    now,
    recreate_database,
    running,
    wait_until,
    with_database,
)

TOOLS = BENCH / ".venvs" / "tools"


def py_spy() -> str:
    binary = TOOLS / "bin" / "py-spy"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS)], check=True)
        subprocess.run([str(TOOLS / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    return str(binary)


def summarise(raw: Path, top: int) -> None:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = [
            f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in stack.split(";")
        ]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    print(f"{total} samples (idle threads included: py-spy --idle is off, so mostly busy ones)")
    for title, counter in (("own time", own), ("including callees", inclusive)):
        print(f"\n-- top {top} by {title}")
        for frame, samples in counter.most_common(top):
            print(f"{100 * samples / total:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--prefetch", type=int, default=300)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--gil", action="store_true", help="only samples holding the GIL: Python's own CPU time"
    )
    args = parser.parse_args()
    base = os.environ.get("DATABASE_URL", "postgres://root@127.0.0.1:5432/pgjobs")
    url = with_database(base, base.rsplit("/", 1)[-1] + f"_bench_profile_{os.getpid()}")
    workdir = BENCH / ".work"
    workdir.mkdir(exist_ok=True)
    raw = workdir / "profile.txt"
    recreate_database(url)
    try:  # the scratch database goes whatever happens
        from pgjobs_runner import PgJobs

        adapter = PgJobs(url, workdir)
        adapter.install()
        spy = py_spy()
        with running(
            adapter, Config(args.processes, args.concurrency, {"prefetch": args.prefetch})
        ) as workers:
            options = ["--subprocesses", "--threads", "--nonblocking", "--rate", "1000"]
            options += ["--gil"] if args.gil else []
            output = ["--format", "raw", "--output", str(raw)]
            recorder = subprocess.Popen(
                [spy, "record", "--pid", str(workers.procs[0].pid), *options, *output],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            before = adapter.done()
            adapter.enqueue_queued(args.jobs)
            started = now()
            wait_until(lambda: adapter.done() >= before + args.jobs, 600, "the drain", 0.01)
            elapsed = now() - started
            recorder.send_signal(signal.SIGINT)
            recorder.wait(30)
    finally:
        drop_database(url)
    print(f"drained {args.jobs} jobs in {elapsed:.2f}s: {args.jobs / elapsed:,.0f} jobs/s\n")
    summarise(raw, args.top)


if __name__ == "__main__":
    main()
