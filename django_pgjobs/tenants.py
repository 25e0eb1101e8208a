"""Tenant context: the tenant current at enqueue is the tenant around the job's run.

``PGJOBS["MIDDLEWARE"]`` entry ``"django_pgjobs.tenants.TenantMiddleware"`` (django-tenants:
the connection's schema), or an instance made with two callables of your own::

    tenants = TenantMiddleware(current=get_tenant_id, activate=use_tenant)

At enqueue, ``current()`` is stored in each new job's ``meta["tenant"]`` (unless the
caller set one); around the job, ``activate(tenant)`` (a context manager) is entered.
Jobs enqueued by a running job, by a schedule or by a pipeline stage are enqueued
inside it, so they carry the tenant on.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .exceptions import DiscardJob

if TYPE_CHECKING:
    from .context import JobContext
    from .enqueue import JobSpec
    from .models import Job

#: Where a job keeps its tenant.
META_KEY = "tenant"


class TenantMiddleware:
    def __init__(
        self,
        current: Callable[[], Any] | str | None = None,
        activate: Callable[[Any], AbstractContextManager[Any]] | str | None = None,
    ) -> None:
        if (current is None) != (activate is None):
            raise ImproperlyConfigured("TenantMiddleware: give current and activate, or neither")
        if current is None:
            self.current, self.activate = django_tenants_hooks()
        else:
            self.current = import_string(current) if isinstance(current, str) else current
            self.activate = import_string(activate) if isinstance(activate, str) else activate

    def enqueue(
        self, specs: list[JobSpec], call_next: Callable[[list[JobSpec]], list[Job]]
    ) -> list[Job]:
        tenant = self.current()
        if tenant is not None:
            for spec in specs:
                # Any meta but a dict is refused by enqueue's checks; an explicit tenant stays.
                if isinstance(spec.meta, dict) and META_KEY not in spec.meta:
                    spec.meta = {**spec.meta, META_KEY: tenant}
        return call_next(specs)

    def execute(self, context: JobContext, call_next: Callable[[], Any]) -> Any:
        meta = context.job.meta if isinstance(context.job.meta, dict) else {}
        tenant = meta.get(META_KEY)
        if tenant is None:
            return call_next()
        if not isinstance(tenant, str | int):
            raise DiscardJob(f"job meta {META_KEY!r} is {tenant!r}: not a tenant")
        with self.activate(tenant):
            return call_next()


def django_tenants_hooks() -> tuple[Callable[[], Any], Callable[[Any], AbstractContextManager]]:
    """django-tenants: the schema of its tenant database's connection, and
    ``schema_context`` to run in one."""
    try:
        from django_tenants.utils import get_tenant_database_alias, schema_context
    except ImportError:
        raise ImproperlyConfigured(
            "TenantMiddleware without arguments follows django-tenants, which is not "
            "installed; give it current= and activate= callables of your own"
        ) from None
    from django.db import connections

    def current() -> str | None:
        return getattr(connections[get_tenant_database_alias()], "schema_name", None)

    def activate(schema: Any) -> AbstractContextManager[Any]:
        if not isinstance(schema, str):
            raise DiscardJob(f"job meta {META_KEY!r} is {schema!r}: not a schema name")
        return schema_context(schema)

    return current, activate
