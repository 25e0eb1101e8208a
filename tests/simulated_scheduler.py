"""A scheduler process on simulated time, for tests/test_scheduler.py.

    python -m tests.simulated_scheduler START

Runs the real ``Scheduler.loop`` from START (an ISO instant). Its clock is kept
by the test process, for all schedulers at once: each sleep prints
``wait <instant>`` and blocks until the test answers ``go`` (simulated time is
now that instant) or ``stop``. The test wakes whoever asked for the earliest
instant, all together when several asked for the same one, so schedulers race
for each tick as they would on synchronised real clocks, without real waiting.
Prints its stats as JSON when stopped.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import datetime


class SharedClock:
    def __init__(self, start: datetime, on_stop: Callable[[], None]) -> None:
        self.current = start
        self.on_stop = on_stop

    def now(self) -> datetime:
        return self.current

    def sleep_until(self, when: datetime) -> None:
        print(f"wait {when.isoformat()}", flush=True)
        if sys.stdin.readline().strip() == "go":
            self.current = max(self.current, when)
        else:
            self.on_stop()


def main(start: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()
    from django_pgjobs.scheduler import Scheduler

    scheduler = Scheduler(routines=[])
    clock = SharedClock(datetime.fromisoformat(start), scheduler.request_stop)
    scheduler.clock = clock.now
    clock.sleep_until(clock.current)  # start when the others do
    scheduler.loop(clock.sleep_until)
    print(json.dumps(dict(scheduler.stats)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
