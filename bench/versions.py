"""Two checkouts of django-pgjobs, interleaved round by round: what a change cost.

    git worktree add /tmp/before <rev> && ln -s "$PWD/.venv" /tmp/before/
    .venv/bin/python bench/versions.py /tmp/before . --rounds 5

Each round runs ``bench/run.py --only <ours>`` (W1 one job per transaction, W1 bulk,
W2 drain at the recommended config) in each checkout, alternating which goes first,
and prints the per-round ratios (second / first) with the load of the round, and
their medians. Both run on the same machine, minutes apart at most.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

FIGURES = {
    "W1 each": (r"\] W1 (\[.*\])", lambda v: v[0]["each"]),
    "W1 bulk": (r"\] W1 (\[.*\])", lambda v: v[0]["bulk"]),
    "W2 drain": (r"\] W2 [^:]*: (\[.*\])", lambda v: v[0]["jobs_per_s"]),
}


def measure(checkout: Path, jobs: int, each: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--only", "pgjobs", "--no-ceiling", "--configs", "1",
         "--jobs", str(jobs), "--each-jobs", str(each), "--latency-jobs", "20", "--reps", "1"],
        cwd=checkout, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"{checkout}: bench/run.py failed:\n{done.stdout[-2000:]}{done.stderr}")
    found = {}
    output = done.stdout + done.stderr  # the runner's progress lines go to stderr
    for name, (pattern, pick) in FIGURES.items():
        match = re.search(pattern, output)
        if match is None:
            raise SystemExit(f"{checkout}: no {name} in:\n{done.stdout[-2000:]}")
        found[name] = float(pick(ast.literal_eval(match.group(1))))
    return found


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
