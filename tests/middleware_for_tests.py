"""Middleware the tests configure (importable by worker processes through settings)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from django_pgjobs import DiscardJob
from django_pgjobs.tenants import TenantMiddleware
from testproject.demo.tasks import record


def outer(context: Any, call_next: Any) -> Any:
    record(f"outer:before:{context.job.task.rsplit('.', 1)[-1]}")
    try:
        return call_next()
    finally:
        record("outer:after")


def inner(context: Any, call_next: Any) -> Any:
    record("inner:before")
    result = call_next()
    record(f"inner:after:{result!r}")
    return result


class Stamp:
    """Stamps each new job's meta at enqueue and records it back at execution."""

    def enqueue(self, specs: list, call_next: Any) -> list:
        for spec in specs:
            spec.meta = {**spec.meta, "stamp": "stamped"}
        return call_next(specs)

    def execute(self, context: Any, call_next: Any) -> Any:
        record(f"stamp:{context.job.meta.get('stamp')}")
        return call_next()


#: Job ids InLoop saw, in this process (the ORM is not for async code).
SEEN_IN_LOOP: list[int] = []


class InLoop:
    """An async hook: wraps async tasks inside their event loop."""

    async def execute(self, context: Any, call_next: Any) -> Any:
        asyncio.get_running_loop()
        SEEN_IN_LOOP.append(context.job.pk)
        return await call_next()


def discard_value_errors(context: Any, call_next: Any) -> Any:
    """A custom retry decision: a ValueError is not worth another attempt."""
    try:
        return call_next()
    except ValueError as error:
        raise DiscardJob(f"not retried: {error}") from error


# -- a tenancy of its own, for TenantMiddleware's callable form --------------------------

CURRENT_TENANT: ContextVar[str | None] = ContextVar("test_tenant", default=None)


def current_tenant() -> str | None:
    return CURRENT_TENANT.get()


@contextlib.contextmanager
def use_tenant(tenant: str) -> Iterator[None]:
    token = CURRENT_TENANT.set(tenant)
    try:
        yield
    finally:
        CURRENT_TENANT.reset(token)


tenants = TenantMiddleware(current=current_tenant, activate=use_tenant)
