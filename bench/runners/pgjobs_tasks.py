"""The benchmark's tasks for django-pgjobs: a no-op, and one that reports when it starts."""

from common import send_stamp

from django_pgjobs import task


@task
def noop() -> None:
    pass


@task
def stamp(seq: int) -> None:
    send_stamp(seq)
