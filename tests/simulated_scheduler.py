"""A scheduler process on a simulated clock, for tests/test_scheduler.py.

    python -m tests.simulated_scheduler START END

Runs the real ``Scheduler.loop`` from START to END (ISO instants), but its sleep
jumps the clock to the wake-up time instead of waiting, so hours of ticks take
seconds. It waits for a line on stdin before starting, so that several
processes can be started together, and prints its stats as JSON when done.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime


class SimulatedClock:
    def __init__(self, start: datetime, end: datetime, on_end: object) -> None:
        self.current, self.end, self.on_end = start, end, on_end

    def now(self) -> datetime:
        return self.current

    def sleep_until(self, when: datetime) -> None:
        if when > self.end:
            self.on_end()
        else:
            self.current = max(self.current, when)


def main(start: str, end: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()
    from django_pgjobs.scheduler import Scheduler

    scheduler = Scheduler(routines=[])
    clock = SimulatedClock(
        datetime.fromisoformat(start), datetime.fromisoformat(end), scheduler.request_stop
    )
    scheduler.clock = clock.now
    print("ready", flush=True)
    sys.stdin.readline()
    scheduler.loop(clock.sleep_until)
    print(json.dumps(dict(scheduler.stats)), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
