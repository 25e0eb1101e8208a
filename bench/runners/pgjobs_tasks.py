"""The benchmark's tasks for django-pgjobs: a no-op, one that reports when it starts,
and for bench/poison.py one that sleeps and one that kills its process."""

import ctypes
import os
import signal
import time

from common import send_stamp

from django_pgjobs import task


@task
def noop() -> None:
    pass


@task
def stamp(seq: int) -> None:
    send_stamp(seq)


@task
def sleep_ms(ms: float) -> None:
    if ms:
        time.sleep(ms / 1000)


@task(max_attempts=3, backoff={"strategy": "fixed", "base": 0.5, "jitter": 0})
def poison(how: str) -> None:
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(3)
    ctypes.string_at(0)  # SIGSEGV
