"""What a fleet's LISTEN connections do to a database that is down: how many
connection attempts a second, how many at once, and how soon each would get through
once it is back.

    .venv/bin/python bench/fleet_reconnects.py [--notifiers 200] [--seconds 70]

Forks ``notifiers`` processes (a fleet's worker processes: each has one LISTEN
connection) that each run a real ``Notifier`` against a port on 127.0.0.1 that
refuses connections, as a stopped server's does, all released at the same moment (the
server went away), and records when each tries to connect. Prints the attempts per
second (first seconds, then steady), the most attempts within any 10 ms and 100 ms (a
fleet in lockstep makes all of them at once), and for outages that end after 1, 8, 30
and 60 s how long each notifier would take to try again (its pickup: a worker's other
loops wait for the first of its connections that gets through). Light: the processes
are forked after Django's setup, and sleep between attempts.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def refusing_port() -> int:
    """A port nothing listens on (bound, then closed): connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_notifier(Notifier: type, go: int, seconds: float) -> list[float]:
    """In a process of its own: wait for ``go`` to close, then run one notifier for
    ``seconds``; when it tried to connect."""
    attempts: list[float] = []

    class Counted(Notifier):  # type: ignore[misc, valid-type]
        def _listen(self):  # type: ignore[no-untyped-def]
            attempts.append(time.monotonic())
            return super()._listen()

    notifier = Counted(["pgjobs_jobs"], lambda channel, payload: None)
    notifier.params = {**notifier.params, "connect_timeout": 5}
    os.read(go, 1)  # every process is released at once: the server just went away
    notifier.start()
    time.sleep(seconds)  # a measurement's length, not a wait for a condition
    notifier._stop.set()
    notifier.stop(10)
    return attempts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notifiers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=70.0)
    options = parser.parse_args()

    port = refusing_port()
    os.environ["DATABASE_URL"] = f"postgres://root@127.0.0.1:{port}/down"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import logging

    import django

    django.setup()
    logging.getLogger("django_pgjobs").setLevel(logging.ERROR)
    from django_pgjobs.notifier import Notifier

    # One process per notifier, as in a fleet (threads of one process would take
    # turns with the interpreter to connect, and drift apart by that alone).
    go_read, go_write = os.pipe()
    children = []
    for _ in range(options.notifiers):
        out_read, out_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go_write)
            os.close(out_read)
            attempts = run_notifier(Notifier, go_read, options.seconds)
            os.write(out_write, json.dumps(attempts).encode())
            os._exit(0)
        os.close(out_write)
        children.append((pid, out_read))
    os.close(go_read)
    started = time.monotonic()
    os.close(go_write)  # releases them all
    attempts = []
    for pid, out_read in children:
        with os.fdopen(out_read) as out:
            attempts.append(json.loads(out.read() or "[]"))
        os.waitpid(pid, 0)

    # From each notifier's first attempt (the moment its process saw the server go).
    times = sorted(t - started for seen in attempts for t in seen)
    seconds = int(options.seconds)
    per_second = [
        bisect.bisect_left(times, s + 1) - bisect.bisect_left(times, s) for s in range(seconds)
    ]

    def busiest(window: float, start: float, end: float) -> int:
        """Most attempts within ``window`` seconds that begins from ``start`` to ``end``."""
        first, last = bisect.bisect_left(times, start), bisect.bisect_left(times, end)
        return max(
            (bisect.bisect_left(times, times[i] + window) - i for i in range(first, last)),
            default=0,
        )

    print(f"{options.notifiers} notifiers against a refusing port for {options.seconds:.0f}s")
    print(f"attempts a second, seconds 0-9: {per_second[:10]}")
    # From 5 s: every notifier's first waits (0.1 s and so on) fall together, whatever
    # their spread.
    for start, end in ((5, 30), (30, 60), (60, seconds)):
        if end > start and end <= seconds:
            window = per_second[start:end]
            print(
                f"{start}-{end}s: attempts a second mean {statistics.mean(window):.0f}, "
                f"max {max(window)}; most within 10 ms {busiest(0.01, start, end)}, "
                f"within 100 ms {busiest(0.1, start, end)}"
            )
    for back in (1.0, 8.0, 30.0, 60.0):
        if back + 5 > options.seconds:
            continue
        waits = []
        for seen in attempts:
            later = [t - started for t in seen if t - started >= back]
            waits.append(later[0] - back)
        waits.sort()
        print(
            f"back after {back:.0f}s: next attempt p50 {statistics.median(waits):.2f}s, "
            f"p90 {waits[int(0.9 * len(waits))]:.2f}s, max {waits[-1]:.2f}s"
        )
    print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
