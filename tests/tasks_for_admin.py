"""Tasks the admin tests use."""

from django_pgjobs import task
from testproject.demo.models import Run


@task(max_attempts=1)
def charge(order: int) -> str:
    """Fails until a Run tagged "fixed" exists: the operator's fix before a retry."""
    if not Run.objects.filter(tag="fixed").exists():
        raise RuntimeError(f"order {order}: the payment service refused the charge")
    return f"order {order} charged"
