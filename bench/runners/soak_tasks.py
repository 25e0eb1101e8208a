"""The soak's tasks (bench/soak.py): a job that fails now and then, and a cron tick."""

import random

from django_pgjobs import task


class Flaked(Exception):
    """The expected failure of a soak job."""


@task(max_attempts=3, backoff={"strategy": "fixed", "base": 1.0, "jitter": 0})
def maybe_fail(fail_rate: float) -> None:
    if random.random() < fail_rate:
        raise Flaked("soak: planned failure")


@task
def tick() -> None:
    pass
