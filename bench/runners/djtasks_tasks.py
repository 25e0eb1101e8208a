"""The benchmark's tasks for django-tasks-db."""

from common import send_stamp
from django.tasks import task


@task
def noop() -> None:
    pass


@task
def stamp(seq: int) -> None:
    send_stamp(seq)
