"""A task module that no setting lists. Nothing may import it because a job row, an
API request or a schedule names one of its tasks (tests/test_hardening_names.py)."""

from django_pgjobs import task


@task
def planted() -> str:
    return "this module's code ran"
