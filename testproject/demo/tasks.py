"""Tasks of the demo project; the test suite uses them too."""

from __future__ import annotations

import asyncio
import os
import random
import time

from django_pgjobs import task

from .models import Run


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue="mail", max_attempts=3)
def send_welcome(user_id: int) -> str:
    time.sleep(0.2)
    return f"welcome mail sent to user {user_id}"


@task(max_attempts=3, backoff={"strategy": "fixed", "base": 1.0, "jitter": 0.0})
def flaky(fail_rate: float = 0.5) -> str:
    if random.random() < fail_rate:
        raise RuntimeError("the flaky service said no")
    return "ok"


@task(max_attempts=2, backoff={"strategy": "fixed", "base": 0.5, "jitter": 0.0})
def always_fails(message: str = "boom") -> None:
    raise ValueError(message)


@task
async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@task
def record(tag: str) -> str:
    """Insert a Run row so tests can count executions."""
    Run.objects.create(tag=tag, pid=os.getpid())
    return tag


@task(queue="serial")
def serial_step(tag: str, seconds: float = 0.05) -> str:
    record(tag)
    time.sleep(seconds)
    record(f"{tag}:end")
    return tag


@task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
def square(n: int) -> int:
    return n * n


@task
def total(results: list[int]) -> int:
    """A pipeline's gather step: receives every result of the stage before."""
    return sum(results)


@task
def split(count: int) -> int:
    """Fan out from inside a running job: whatever waits for us waits for these too."""
    from django_pgjobs.context import current_job

    current_job().add_jobs([square.spec(n) for n in range(count)])
    return count
