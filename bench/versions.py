"""Two checkouts of django-pgjobs, interleaved round by round: what a change cost.

    git worktree add /tmp/before <rev> && ln -s "$PWD/.venv" /tmp/before/
    .venv/bin/python bench/versions.py /tmp/before . --rounds 5

Each round runs each checkout's own ``bench/runners/pgjobs_runner.py`` (W1 one job
per transaction, W1 bulk, W2 drain at its best config, whole and steady), in a fresh
database dropped afterwards, alternating which goes first, and prints the per-round
ratios (second / first) with the load of the round, and their medians. Both run on
the same machine, minutes apart at most.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import database_name, with_database

FIGURES = {
    "W1 each": "w1_each",
    "W1 bulk": "w1_bulk",
    "W2 drain": "w2_jobs_per_s",
    "W2 steady": "w2_steady_per_s",
}
DATABASE = "postgres://root@127.0.0.1:5432/pgjobs"


def measure(checkout: Path, jobs: int, each: int) -> dict[str, float]:
    """One run of the checkout's own runner (W1 and W2 at its best config)."""
    base = os.environ.get("DATABASE_URL", DATABASE)
    url = with_database(base, f"{database_name(base)}_bench_versions_{os.getpid()}")
    done = subprocess.run(
        [sys.executable, "bench/runners/pgjobs_runner.py", f"--url={url}", f"--jobs={jobs}",
         f"--each-jobs={each}", "--latency-jobs=20", "--workloads=w1,w2"],
        cwd=checkout, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"{checkout}: its runner failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: float(result[key]) for name, key in FIGURES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="the checkout before the change")
    parser.add_argument("second", type=Path, help="the checkout after it")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=20_000, help="W1 bulk and W2 jobs")
    parser.add_argument("--each-jobs", type=int, default=2_000, help="W1 one-per-tx jobs")
    options = parser.parse_args()
    ratios: dict[str, list[float]] = {name: [] for name in FIGURES}
    for number in range(1, options.rounds + 1):
        order = [options.first, options.second]
        if number % 2 == 0:
            order.reverse()
        load = os.getloadavg()[0]
        got = {checkout: measure(checkout, options.jobs, options.each_jobs) for checkout in order}
        before, after = got[options.first], got[options.second]
        cells = []
        for name in FIGURES:
            ratio = after[name] / before[name]
            ratios[name].append(ratio)
            cells.append(f"{name} {before[name]:,.0f} -> {after[name]:,.0f} ({ratio:.2f})")
        print(f"round {number} (load {load:.2f}, {order[0].name} first): " + "; ".join(cells))
    print("median ratio second/first: " + "; ".join(
        f"{name} {statistics.median(values):.2f}" for name, values in ratios.items()))  # fmt: skip


if __name__ == "__main__":
    main()
