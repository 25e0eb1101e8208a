"""Tasks only the tests use."""

import sys

from django_pgjobs import DiscardJob, task


@task
def give_up() -> None:
    raise DiscardJob("the input is not worth retrying")


@task
def exits() -> None:
    sys.exit(3)
