"""A task module no app imports and PGJOBS["TASK_MODULES"] doesn't list, as a project's
``shop/jobs.py`` may be: the test process imports it and enqueues its task; a worker
process has never heard of it."""

from django_pgjobs import task


@task
def forgotten(n: int) -> int:
    return n
