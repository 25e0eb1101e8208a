"""Hooks around each job's execution and around enqueue: ``PGJOBS["MIDDLEWARE"]``.

Each entry is a dotted path (or the object itself) naming:

- a function ``f(context, call_next)``: it wraps each job's execution;
- or a class, made once with no arguments, or an object, with either or both of
  ``execute(context, call_next)`` and ``enqueue(specs, call_next)``.

``execute`` sees the job's ``JobContext`` (``context.job``) and must return what
``call_next()`` returned (or raise): that is the task's result. A sync ``execute``
wraps every job, sync or async. An ``async def execute`` wraps async tasks only,
inside their event loop (``return await call_next()``); sync tasks pass it by,
since an event loop around them would turn Django's ORM away.

``enqueue`` sees the list of ``JobSpec`` about to be written (one, or a batch of
``enqueue_many``) and returns ``call_next(specs)``: the jobs. It may change the
specs (their ``meta``, say) before passing them on.

The first entry is the outermost. With no entry, a job costs one test of an
empty tuple more.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from . import conf

if TYPE_CHECKING:
    from .context import JobContext
    from .enqueue import JobSpec
    from .models import Job

ExecuteNext = Callable[[], Any]
AsyncExecuteNext = Callable[[], Awaitable[Any]]
EnqueueNext = Callable[[list["JobSpec"]], list["Job"]]


@dataclass(frozen=True)
class Chain:
    """The configured hooks, each kind in order, outermost first."""

    execute: tuple[Callable[[JobContext, ExecuteNext], Any], ...] = ()
    execute_async: tuple[Callable[[JobContext, AsyncExecuteNext], Awaitable[Any]], ...] = ()
    enqueue: tuple[Callable[[list[JobSpec], EnqueueNext], list[Job]], ...] = ()


_lock = threading.Lock()
#: The chain in force, built on first use and again after the setting changes.
_chain: Chain | None = None
#: Entries this process runs after those of the setting (``add``).
_added: tuple[str, ...] = ()


def chain() -> Chain:
    """The chain of ``PGJOBS["MIDDLEWARE"]`` (and of ``add``): built once, then a
    global read per job (the setting itself costs a lookup through LazySettings)."""
    found = _chain
    return found if found is not None else _build_chain()


def _build_chain() -> Chain:
    global _chain
    with _lock:
        entries = conf.get("MIDDLEWARE")
        built = build([*entries, *(a for a in _added if a not in entries)])
        _chain = built
    return built


def forget() -> None:
    """Build the chain again on next use (the setting changed)."""
    global _chain
    _chain = None


@receiver(setting_changed)
def _setting_changed(setting: str, **kwargs: Any) -> None:
    if setting == "PGJOBS":
        forget()


def add(path: str) -> None:
    """Run the middleware at ``path`` in this process too (innermost), unless the
    setting names it already: ``runworker --metrics-port`` adds the metrics one."""
    global _added
    with _lock:
        if path not in _added:
            _added = (*_added, path)
    forget()


def build(entries: Sequence[Any]) -> Chain:
    """The hooks of ``entries``; raises ``ImproperlyConfigured`` naming a bad one."""
    execute, execute_async, enqueue = [], [], []
    for entry in entries:
        hooks = load(entry)
        run = getattr(hooks, "execute", None)
        if run is None and inspect.isfunction(hooks):
            run = hooks
        add = getattr(hooks, "enqueue", None)
        if run is None and add is None:
            raise ImproperlyConfigured(
                f"PGJOBS['MIDDLEWARE'] entry {entry!r} is neither a function "
                "f(context, call_next) nor an object with execute() or enqueue()"
            )
        if run is not None:
            (execute_async if inspect.iscoroutinefunction(run) else execute).append(run)
        if add is not None:
            enqueue.append(add)
    return Chain(tuple(execute), tuple(execute_async), tuple(enqueue))


def load(entry: Any) -> Any:
    if isinstance(entry, str):
        try:
            entry = import_string(entry)
        except ImportError as error:
            raise ImproperlyConfigured(
                f"PGJOBS['MIDDLEWARE'] entry {entry!r} can't be imported: {error}"
            ) from None
    return entry() if inspect.isclass(entry) else entry


def execute(context: JobContext, call: ExecuteNext, hooks: Sequence[Any] | None = None) -> Any:
    """``call()`` inside every sync execute hook, the first outermost."""
    hooks = chain().execute if hooks is None else hooks
    if not hooks:
        return call()

    def step(index: int) -> Any:
        if index == len(hooks):
            return call()
        return hooks[index](context, lambda: step(index + 1))

    return step(0)


async def execute_async(context: JobContext, call: AsyncExecuteNext) -> Any:
    """``await call()`` inside every async execute hook, the first outermost."""
    hooks = chain().execute_async
    if not hooks:
        return await call()

    async def step(index: int) -> Any:
        if index == len(hooks):
            return await call()
        return await hooks[index](context, lambda: step(index + 1))

    return await step(0)


def enqueue(specs: list[JobSpec], insert: EnqueueNext) -> list[Job]:
    """``insert(specs)`` inside every enqueue hook, the first outermost."""
    hooks = chain().enqueue

    def step(index: int, current: list[JobSpec]) -> list[Job]:
        if index == len(hooks):
            return insert(current)
        return hooks[index](current, lambda changed: step(index + 1, list(changed)))

    return step(0, specs)
