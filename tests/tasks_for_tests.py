"""Tasks only the tests use."""

import sys

from django_pgjobs import DiscardJob, task


@task
def give_up() -> None:
    raise DiscardJob("the input is not worth retrying")


@task
def exits() -> None:
    sys.exit(3)


@task
def enqueue_follow_up(n: int) -> int:
    """Enqueues another job, as tasks that fan out do."""
    from testproject.demo.tasks import add

    add.enqueue(n, n)
    return n
