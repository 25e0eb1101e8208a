"""What a fleet's LISTEN connections do to a database that is down: how many
connection attempts a second, how many at once, and how soon each would get through
once it is back.

    .venv/bin/python bench/fleet_reconnects.py [--notifiers 200] [--seconds 70]

Starts ``notifiers`` real ``Notifier`` threads (one per worker process of a fleet:
each process has one) against a port on 127.0.0.1 that refuses connections, as a
stopped server's does, and records when each one tries to connect. Prints the
attempts per second (first seconds, then steady), the most attempts within any 10 ms
(a fleet in lockstep makes all of them at once), and for outages that end after 1, 8,
30 and 60 s how long each notifier would take to try again (its pickup: a worker's
other loops wait for the first of its connections that gets through). All in one
process, sharing one record of the outage as the processes of a fleet, which all
fail at the same moment, have the same.
"""

from __future__ import annotations

import argparse
import bisect
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def refusing_port() -> int:
    """A port nothing listens on (bound, then closed): connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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

    attempts: list[list[float]] = [[] for _ in range(options.notifiers)]

    class Counted(Notifier):
        def __init__(self, index: int) -> None:
            super().__init__(["pgjobs_jobs"], lambda channel, payload: None)
            self.params = {**self.params, "connect_timeout": 5}
            self.index = index

        def _listen(self):  # type: ignore[no-untyped-def]
            attempts[self.index].append(time.monotonic())
            return super()._listen()

    notifiers = [Counted(i) for i in range(options.notifiers)]
    started = time.monotonic()
    for notifier in notifiers:
        notifier.start()
    time.sleep(options.seconds)  # a measurement's length, not a wait for a condition
    for notifier in notifiers:
        notifier._stop.set()
    for notifier in notifiers:
        notifier.stop(10)

    # From each notifier's first attempt (the moment its process saw the server go).
    times = sorted(t - started for seen in attempts for t in seen)
    seconds = int(options.seconds)
    per_second = [
        bisect.bisect_left(times, s + 1) - bisect.bisect_left(times, s) for s in range(seconds)
    ]
    burst = max(
        bisect.bisect_left(times, t + 0.01) - bisect.bisect_left(times, t) for t in times
    )
    print(f"{options.notifiers} notifiers against a refusing port for {options.seconds:.0f}s")
    print(f"attempts a second, seconds 0-9: {per_second[:10]}")
    for start, end in ((10, 30), (30, 60), (60, seconds)):
        if end > start and end <= seconds:
            window = per_second[start:end]
            print(
                f"attempts a second, {start}-{end}s: mean {statistics.mean(window):.0f}, "
                f"max {max(window)}"
            )
    print(f"most attempts within 10 ms: {burst}")
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
    threading.excepthook = lambda args: None  # a notifier stopped mid-connect
    main()
