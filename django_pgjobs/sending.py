"""Sending a signal about a job: every receiver is called; one that raises is logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.dispatch import Signal

from . import logs

if TYPE_CHECKING:
    from .models import Job

logger = logging.getLogger(__name__)


def send(signal: Signal, name: str, about: Job, sender: Any, /, **named: Any) -> None:
    """Send ``signal`` (``name`` in the log) about the job ``about`` to each of its
    receivers, as ``Signal.send`` does, but go on past a receiver that raises: its
    error is logged once (logger ``django_pgjobs``, with its traceback, the job and
    the receiver) and raised nowhere. Each signal of ours tells of a change already
    written: a receiver's error raised to the sender had a worker take a written
    outcome for a failed write, and leave the rest of its batch unsignalled, and an
    enqueue's caller take jobs committed for jobs not enqueued.

    Not ``Signal.send_robust``: it logs each error itself (logger ``django.dispatch``,
    without the job), and ours made two records of one error. An ``Exception``, as
    ``send_robust`` catches: a KeyboardInterrupt still goes through."""
    if not signal.receivers:  # a signal nobody listens to costs one test
        return
    found = live_receivers(signal, sender)
    if found is None:  # a Django whose lookup we can't borrow: its public way
        for receiver, response in signal.send_robust(sender=sender, **named):
            if isinstance(response, Exception):
                _log_failure(name, about, receiver, response)
        return
    sync_receivers, async_receivers = found
    for receiver in sync_receivers:
        try:
            receiver(signal=signal, sender=sender, **named)
        except Exception as error:
            _log_failure(name, about, receiver, error)
    if async_receivers:
        try:
            async_to_sync(_send_async)(signal, name, about, sender, async_receivers, named)
        except Exception as error:  # they can't be called here (in a running event loop)
            _log_failure(name, about, async_receivers[0], error)


def live_receivers(signal: Any, sender: Any) -> tuple[list, list] | None:
    """``Signal.send``'s own lookup, ``signal._live_receivers(sender)`` (weak references
    resolved, the sender's cache): its sync and async receivers, as Django 5.0 to 6.1
    return them. None where this Django's private lookup is missing or answers
    otherwise: a rename there must not make every signal of ours raise instead."""
    lookup = getattr(signal, "_live_receivers", None)
    if lookup is None:
        return None
    try:
        found = lookup(sender)
    except TypeError:  # another signature
        return None
    if not (isinstance(found, tuple) and len(found) == 2):
        return None
    sync_receivers, async_receivers = found
    if not (isinstance(sync_receivers, list) and isinstance(async_receivers, list)):
        return None
    return sync_receivers, async_receivers


async def _send_async(
    signal: Signal,
    name: str,
    about: Job,
    sender: Any,
    receivers: list[Callable[..., Any]],
    named: dict[str, Any],
) -> None:
    """The async receivers, together, as ``Signal.send`` calls them."""

    async def call(receiver: Callable[..., Any]) -> None:
        try:
            await receiver(signal=signal, sender=sender, **named)
        except Exception as error:
            _log_failure(name, about, receiver, error)

    await asyncio.gather(*(call(receiver) for receiver in receivers))


def _log_failure(name: str, job: Job, receiver: Callable[..., Any], error: Exception) -> None:
    logger.error(
        "job %s: %s receiver %s raised %s (the change it tells of stands; the other "
        "receivers were called)",
        job.pk,
        name,
        receiver_name(receiver),
        type(error).__name__,
        exc_info=error,
        extra=logs.job_fields(job),
    )


def receiver_name(receiver: Callable[..., Any]) -> str:
    """``module.qualname`` of a function or method; the repr of anything else."""
    qualname = getattr(receiver, "__qualname__", None)
    if not isinstance(qualname, str):
        return repr(receiver)
    module = getattr(receiver, "__module__", None)
    return f"{module}.{qualname}" if isinstance(module, str) else qualname
