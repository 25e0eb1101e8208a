"""The ``@task`` decorator and the registry of task functions by dotted path."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from . import limits
from .backoff import Backoff
from .exceptions import InvalidOption, UnknownTask
from .unique_keys import CallKey, derive

if TYPE_CHECKING:
    from .binding import Binding
    from .enqueue import JobSpec
    from .models import Job
    from .typed import Signature

P = ParamSpec("P")
R = TypeVar("R")

_registry: dict[str, Task[Any, Any]] = {}

#: What ``retry_on`` and ``discard_on`` take: an exception class or a tuple of them.
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]
#: A task's own backoff: (attempt, error) -> seconds (or a timedelta) to wait.
BackoffFunction = Callable[[int, BaseException], Any]


@dataclass(eq=False)
class Task(Generic[P, R]):
    """A function that can run on a worker. Calling it runs it here and now."""

    func: Callable[P, R]
    name: str
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    #: Retry delays: a policy, or a function of (attempt, error) giving seconds.
    backoff: Backoff | BackoffFunction | None = None
    unique: bool = False
    unique_for: float | None = None
    is_async: bool = field(init=False)
    #: Connector name used by jobs of this task unless the enqueue call names one.
    connector: str | None = None
    #: Run every attempt in a child process of its own (see django_pgjobs.isolation).
    isolated: bool = False
    #: Exceptions worth another attempt; when set, any other one discards the job.
    retry_on: tuple[type[BaseException], ...] = ()
    #: Exceptions that discard the job at once, whatever attempts are left.
    discard_on: tuple[type[BaseException], ...] = ()
    #: Check arguments against the type hints at enqueue; pass typed values in (typed.py).
    typed: bool = False
    #: The key of its jobs under their queue's per-key limits: a string, or a function
    #: of the job's arguments returning one (or None: no key), called at enqueue.
    concurrency_key: str | Callable[..., str | None] | None = None
    _signature: Signature | None = field(default=None, init=False, repr=False)
    _binding: Binding | bool | None = field(default=False, init=False, repr=False)
    _call_key: CallKey | bool | None = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.func)
        self.__doc__ = self.func.__doc__
        self.__wrapped__ = self.func

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    if not TYPE_CHECKING:  # to a type checker, a __getattr__ would make every name exist

        def __getattr__(self, name: str) -> Any:
            """Only reached when the usual lookup failed. Other libraries' ways to enqueue
            (``delay``, ``defer``, ``send``...) say what to call instead; any other name
            is looked up again, so that Python raises its own error (a property's own
            AttributeError included, which this hook would otherwise hide). Nothing of
            ``self`` is read: copy and unpickling probe dunders before its fields exist."""
            instead = ELSEWHERE.get(name)
            if instead is None:
                return object.__getattribute__(self, name)
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r} {instead}; "
                "see docs/howto/from-celery.md",
                name=name,
                obj=self,
            )

    def gives_up_on(self, error: BaseException) -> bool:
        """Whether a failure with ``error`` discards the job at once (``discard_on``, or
        not among ``retry_on`` when that is set); ``RetryAfter`` asks for a retry."""
        from .exceptions import RetryAfter

        if isinstance(error, RetryAfter):
            return False
        if self.discard_on and isinstance(error, self.discard_on):
            return True
        return bool(self.retry_on) and not isinstance(error, self.retry_on)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue a run of this task with these arguments, in the caller's transaction."""
        from .models import Job

        return Job.enqueue(self.name, args=list(args), kwargs=dict(kwargs))

    def spec(self, *args: P.args, **kwargs: P.kwargs) -> JobSpec:
        """A job to enqueue later, e.g. as a stage of a pipeline."""
        from .enqueue import JobSpec

        return JobSpec(self.name, args=list(args), kwargs=dict(kwargs))

    @property
    def signature(self) -> Signature | None:
        """The checked signature of a typed task; None for a plain one. Built when the
        task is defined, or on first use if its hints named what wasn't defined yet."""
        if not self.typed:
            return None
        if self._signature is None:
            from .typed import Signature

            self._signature = Signature(self.func)
        return self._signature

    @property
    def binding(self) -> Binding | None:
        """What a plain task's arguments must bind to, checked at enqueue and before each
        call; None for a typed task (its signature checks them) or a function whose
        parameters Python can't tell. Worked out once."""
        if self._binding is False:
            from .binding import Binding

            self._binding = None if self.typed else Binding.of(self.func)
        return self._binding  # type: ignore[return-value]

    @property
    def derives_keys(self) -> bool:
        """Whether its jobs get a unique key from their arguments (``unique_key``)."""
        return bool(self.unique or self.unique_for)

    @property
    def call_key(self) -> CallKey | None:
        """Its function's parameters as its unique keys bind arguments to them; None
        for a function whose parameters Python can't tell. Worked out once."""
        if self._call_key is False:
            self._call_key = CallKey.of(self)
        return self._call_key  # type: ignore[return-value]

    def unique_key(self, args: Any, kwargs: Any) -> str | None:
        """The key a ``unique`` task derives from its (checked) arguments, or None: of
        the call, by parameter (one equal to its default counts as left out), however it
        was written."""
        if not self.derives_keys:
            return None
        return derive(self.name, self.call_key, args, kwargs)

    def derived_concurrency_key(self, args: Any, kwargs: Any) -> str | None:
        """The key its ``concurrency_key`` function gives these arguments (None without
        one); InvalidOption, naming the task, if the function raises or returns
        anything but None or a string PostgreSQL can store, of 1 to 255 characters."""
        derive = self.concurrency_key
        if not callable(derive):
            return None
        field = f"concurrency_key of {self.name}"
        try:
            key = derive(*args, **kwargs)
        except Exception as error:
            raise InvalidOption(
                field, f"raised {type(error).__name__}: {limits.shown(str(error))}"
            ) from error
        return None if key is None else limits.text(key, field)

    def using(self, **options: Any) -> Enqueuer:
        """Override enqueue options for one call.

        ``send_welcome.using(run_at=tomorrow, priority=5).enqueue(42)``
        """
        _refuse_unknown_options(self.name, options)
        return Enqueuer(self, options)


@dataclass(frozen=True)
class Enqueuer:
    task: Task[Any, Any]
    options: dict[str, Any]

    def enqueue(self, *args: Any, **kwargs: Any) -> Job:
        from .models import Job

        return Job.enqueue(self.task.name, args=list(args), kwargs=dict(kwargs), **self.options)

    def spec(self, *args: Any, **kwargs: Any) -> JobSpec:
        from .enqueue import JobSpec

        return JobSpec(self.task.name, args=list(args), kwargs=dict(kwargs), **self.options)


@overload
def task(func: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    backoff: Backoff | dict[str, Any] | BackoffFunction | None = None,
    connector: str | None = None,
    unique: bool = False,
    unique_for: float | None = None,
    isolated: bool = False,
    retry_on: ExceptionTypes = (),
    discard_on: ExceptionTypes = (),
    typed: bool = False,
    concurrency_key: str | Callable[..., str | None] | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    backoff: Backoff | dict[str, Any] | BackoffFunction | None = None,
    connector: str | None = None,
    unique: bool = False,
    unique_for: float | None = None,
    isolated: bool = False,
    retry_on: ExceptionTypes = (),
    discard_on: ExceptionTypes = (),
    typed: bool = False,
    concurrency_key: str | Callable[..., str | None] | None = None,
) -> Any:
    """Register a function as a task under its dotted path ("app.module.func").

    Options given here are defaults for every job of the task; a call to
    ``Job.enqueue`` or ``task.using(...)`` can override them.

    ``unique=True``: enqueueing the same arguments while such a job is active
    returns that job. ``unique_for=seconds``: the same, for that long after the
    first was enqueued, whatever became of it. ``isolated=True``: every attempt
    runs in a child process of its own, where ``timeout`` is a hard limit (the
    process is killed) and a crash is the job's alone; about 10-20 ms a job.

    Failures: ``discard_on=(ValueError, ...)`` discards the job at the first of
    those; ``retry_on=(TimeoutError, ...)`` retries only those and discards on any
    other; ``backoff`` is a ``Backoff``, its dict, or a function ``(attempt, error)``
    returning the seconds to wait (docs/flow-control.md).

    ``typed=True``: enqueue checks the arguments against the function's type hints
    (dates, decimals, UUIDs, dataclasses, pydantic models...) and refuses, naming the
    argument, what doesn't fit; the worker passes the typed values in (docs/typed-arguments.md).

    ``concurrency_key="name"`` or ``concurrency_key=lambda account_id, **kw: ...``: the
    key of its jobs under their queue's ``key_concurrency`` and ``key_rate_limit``, the
    function called with the job's arguments at enqueue (docs/flow-control.md).
    """
    _check_options(queue, priority, max_attempts, timeout, connector, unique_for)
    # Taken for their truth, unique="no" made a unique task: flags are True or False,
    # as enqueue's pass_results and every other flag (limits.boolean).
    for flag, value in (("unique", unique), ("isolated", isolated), ("typed", typed)):
        limits.boolean(value, flag)
    retry_on = exception_types(retry_on, "retry_on")
    discard_on = exception_types(discard_on, "discard_on")
    if concurrency_key is not None and not callable(concurrency_key):
        limits.text(concurrency_key, "concurrency_key")
    if isinstance(backoff, dict):
        backoff = Backoff.from_dict(backoff)
    elif backoff is not None and not isinstance(backoff, Backoff) and not callable(backoff):
        raise InvalidOption(
            "backoff",
            f"must be a Backoff, its dict, or a function (attempt, error) -> seconds, "
            f"not {limits.shown(backoff)}",
        )

    def register(fn: Callable[..., Any]) -> Task[Any, Any]:
        _refuse_no_function(fn)
        task_name = name or f"{fn.__module__}.{fn.__qualname__}"
        if "<locals>" in task_name:
            raise ValueError(f"{task_name}: tasks must be module-level functions")
        # Its jobs store the name; a unique task's keys are the name and 33 characters.
        room = limits.TEXT_LENGTH - (UNIQUE_KEY_SUFFIX if unique or unique_for else 0)
        limits.text(task_name, "task name", room)
        registered = Task(
            fn,
            task_name,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            backoff=backoff,
            connector=connector,
            unique=unique,
            unique_for=unique_for,
            isolated=isolated,
            retry_on=retry_on,
            discard_on=discard_on,
            typed=typed,
            concurrency_key=concurrency_key,
        )
        if typed:
            _compile_signature(registered)
        _registry[task_name] = registered
        return registered

    return register(func) if func is not None else register


_NOW = "call .enqueue(42), which enqueues in your transaction (no transaction.on_commit needed)"
_LATER = (
    "or .using(run_at=timezone.now() + timedelta(seconds=10)).enqueue(42) to run it later "
    "(queue= and priority= go to using() too)"
)
_SPEC = "call .spec(42), a job to enqueue later (a pipeline's stage, a depends_on)"
#: Other libraries' ways to enqueue (or sign) a call, and what to write here instead.
ELSEWHERE = {
    "delay": f"(Celery's): {_NOW}",
    "apply_async": f"(Celery's): {_NOW}, {_LATER}",
    "s": f"(Celery's signature): {_SPEC}",
    "si": f"(Celery's signature): {_SPEC}",
    "defer": f"(procrastinate's): {_NOW}",
    "defer_async": f"(procrastinate's): {_NOW}",
    "send": f"(dramatiq's): {_NOW}",
    "send_with_options": f"(dramatiq's): {_NOW}, {_LATER}",
}

#: Other libraries' words for a delay (Celery's countdown and eta, Django Tasks' run_after).
DELAY_WORDS = frozenset({"countdown", "eta", "delay", "run_after", "run_in", "defer", "in_"})


def _refuse_unknown_options(name: str, options: dict[str, Any]) -> None:
    """TypeError, at ``using()``, for an option no job has, naming those there are: at
    enqueue it was Python's "Job.enqueue() got an unexpected keyword argument"."""
    from .enqueue import SPEC_FIELDS

    known = [name for name in SPEC_FIELDS if name not in ("task", "args", "kwargs")]
    for option in options:
        if option in known:
            continue
        if option in DELAY_WORDS:
            hint = "to run it later: run_at=timezone.now() + timedelta(seconds=30)"
        elif close := difflib.get_close_matches(option, known, n=1):
            hint = f"did you mean {close[0]!r}?"
        else:
            hint = "the task's arguments go to enqueue()"
        raise TypeError(
            f"{name}.using() has no option {limits.shown(option)} ({hint}); it takes "
            f"{', '.join(known)}"
        )


def _refuse_no_function(fn: Any) -> None:
    """TypeError saying what @task takes, for what it can't register: Python's own error
    ("'str' object has no attribute '__module__'") named neither the mistake nor the fix."""
    if isinstance(fn, Task):
        raise TypeError(
            f"{fn.name} is a task already: decorate the function once, with @task or "
            f"@task(options), not both"
        )
    if not callable(fn):
        raise TypeError(
            f"@task takes the function to register, not {limits.shown(fn)} "
            f"({type(fn).__name__}): options go by keyword, @task(queue='mail')"
        )


def exception_types(value: Any, field: str) -> tuple[type[BaseException], ...]:
    """``value`` (an exception class or a tuple of them) as a tuple; InvalidOption if not."""
    types = value if isinstance(value, tuple | list) else (value,)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise InvalidOption(
                field, f"must be exception classes, like (TimeoutError,), not {limits.shown(kind)}"
            )
    return tuple(types)


def _compile_signature(registered: Task[Any, Any]) -> None:
    """Build a typed task's signature now, so that a type its arguments can't be stored
    as fails the decorator (a TypeError naming the parameter); a hint naming what its
    module defines further down waits for the first enqueue."""
    global _any_typed
    _any_typed = True
    with contextlib.suppress(NameError):
        registered.signature  # noqa: B018 - built and kept


#: Whether any typed task is registered: if not, enqueue skips looking (a large batch
#: of plain jobs pays nothing for typed arguments).
_any_typed = False


def any_typed() -> bool:
    return _any_typed


#: Characters a derived unique key adds to the task's name (":" and 32 hex digits).
UNIQUE_KEY_SUFFIX = 33


def _check_options(
    queue: Any,
    priority: Any,
    max_attempts: Any,
    timeout: Any,
    connector: Any,
    unique_for: Any,
) -> None:
    """Refuse, when the task is defined, options none of its jobs could have."""
    from .connectors.store import CONNECTOR_NAME
    from .queues import validate_name

    if queue is not None:
        validate_name(queue)
    if priority is not None:
        limits.priority(priority)
    if max_attempts is not None:
        limits.max_attempts(max_attempts)
    if timeout is not None:
        limits.timeout(timeout)
    named = isinstance(connector, str) and CONNECTOR_NAME.match(connector)
    if connector is not None and not named:
        raise InvalidOption("connector", f"is not a connector name: {limits.shown(connector)}")
    if unique_for is not None:
        limits.seconds(unique_for, "unique_for", high=limits.MAX_UNIQUE_FOR)


#: What an UnknownTask says about registering a task.
HOW_TO_REGISTER = (
    "Tasks are looked up among those registered at startup, never imported by name: "
    "define it with @task in the tasks.py module of an installed app, or list its module "
    "in PGJOBS['TASK_MODULES'], and restart the process (web and workers)."
)


def get_task(name: str, *, suggest: bool = False) -> Task[Any, Any]:
    """The registered task called ``name``; UnknownTask if there is none.

    A lookup only, never an import: a name comes from a job row, a client of the
    HTTP API or a schedule, and importing the module it names would run that
    module's code here. Task modules are imported once, at startup
    (``import_task_modules``).

    ``suggest`` names registered tasks close to ``name`` in the error: for the
    project's own code and its staff, never for an HTTP API client, who would learn
    task names it did not send.
    """
    found = _registry.get(name) if isinstance(name, str) else None
    if found is None:
        close = similar_names(name) if suggest else []
        did_you_mean = f"Did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise UnknownTask(name, did_you_mean + HOW_TO_REGISTER)
    return found


def similar_names(name: object) -> list[str]:
    """Up to three registered task names ``name`` may have meant: the same function
    with its path cut short or misspelt (``add``, ``demo.tasks.add``), or a function
    of the same module misspelt (``tasks.ad``, ``tasks.Add``). Module and function are
    compared apart: tasks of one module share most of their names."""
    if not isinstance(name, str) or len(name) > limits.TEXT_LENGTH:
        return []  # no name a job holds: nothing is like it (and difflib stays cheap)
    module, _, function = name.rpartition(".")
    same_function, same_module = [], []
    for known in list(_registry):  # a copy: a thread may register a task meanwhile
        known_module, _, known_function = known.rpartition(".")
        if _spelling(known_function) == _spelling(function):
            same_function.append(known)
        elif known_module == module and _close(known_function, function):
            same_module.append(known)
    # The path nearest the one typed first: ``demo.tasks.add`` meant the demo's.
    same_function.sort(key=lambda known: -difflib.SequenceMatcher(None, known, name).ratio())
    return (same_function + same_module)[:3]


def _spelling(function: str) -> str:
    """A function's name as typed in any case, with or without underscores."""
    return function.replace("_", "").lower()


def _close(known: str, typed: str) -> bool:
    return difflib.SequenceMatcher(None, known, typed).ratio() >= 0.75


def registered_or_none(name: str) -> Task[Any, Any] | None:
    """``get_task``, or None for a task this process doesn't know (a job enqueued by
    newer code): for failing an attempt the worker ends itself (a timeout, a lost
    process), by the queue's backoff then."""
    try:
        return get_task(name)
    except UnknownTask:
        return None


def import_task_modules() -> None:
    """Import the modules that define tasks: the ``tasks`` module of every installed
    app and each module of ``PGJOBS["TASK_MODULES"]``. Called by ``AppConfig.ready``.

    A module that fails to import fails the start, as Django's own autodiscovery
    does; a setting of the wrong type is left to the system check to report.
    """
    from django.utils.module_loading import autodiscover_modules

    from . import conf
    from .connectors import tasks as _built_in  # noqa: F401 - the connectors' "call" task

    autodiscover_modules("tasks")
    modules = conf.get("TASK_MODULES")
    if isinstance(modules, list | tuple):
        for module in modules:
            if isinstance(module, str):
                importlib.import_module(module)


def registered_tasks() -> dict[str, Task[Any, Any]]:
    return dict(_registry)
