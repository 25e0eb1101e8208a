"""Whether a plain task's arguments bind to its function's parameters, as a call would."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .exceptions import InvalidArguments
from .limits import shown

#: Parameters a worker passes in itself (pipelines' ``results``, a connector's
#: ``connector``): not required at enqueue. ``connector`` is passed only to a job that
#: names a connector (its own or its task's), ``results`` only to one enqueued with
#: ``pass_results=True``: required of the others.
INJECTED = frozenset({"results", "connector"})

P = inspect.Parameter
POSITIONAL = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)
KEYWORD = (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)
VARIADIC = (P.VAR_POSITIONAL, P.VAR_KEYWORD)


class Binding:
    """A function's parameters, worked out once per task so that checking a job's
    arguments costs a few set operations per enqueue: ``inspect.Signature.bind`` took
    4.6 us, more than the rest of ``Job.enqueue``'s Python work per job in a batch.
    The messages are those of a typed task's signature (typed.Signature.parse)."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.name = _name(func)
        # The function's own parameters, not those of what it wraps: functools.wraps
        # copies a wrapped function's name and __wrapped__, not what the wrapper passes
        # it (a decorator may add an argument of its own), and a wrapper of
        # (*args, **kwargs) is left unchecked rather than refused what it would take.
        parameters = list(inspect.signature(func, follow_wrapped=False).parameters.values())
        kinds = {parameter.kind for parameter in parameters}
        positional = [p.name for p in parameters if p.kind in POSITIONAL]
        self.most = None if P.VAR_POSITIONAL in kinds else len(positional)
        self.any_keyword = P.VAR_KEYWORD in kinds
        self.keywords = frozenset(p.name for p in parameters if p.kind in KEYWORD)
        self.positional_only = frozenset(p.name for p in parameters if p.kind is P.POSITIONAL_ONLY)
        required = [p.name for p in parameters if p.default is P.empty and p.kind not in VARIADIC]
        # Indexed by how many positional arguments are given (at most len(positional)):
        # the names they bind that a keyword could name again, and what is left to give.
        counts = range(len(positional) + 1)
        self.bound = [frozenset(positional[:n]) - self.positional_only for n in counts]
        self.missing = [tuple(r for r in required if r not in positional[:n]) for n in counts]
        self.missing_at_enqueue = {
            (connector, results): [
                tuple(r for r in m if r not in passed_in(connector, results)) for m in self.missing
            ]
            for connector in (True, False)
            for results in (True, False)
        }

    @classmethod
    def of(cls, func: Callable[..., Any]) -> Binding | None:
        """The binding of ``func``, or None for a callable whose parameters Python
        can't tell (some builtins): its calls are not checked."""
        try:
            return cls(func)
        except (TypeError, ValueError):
            return None

    def check(
        self,
        args: Sequence[Any],
        kwargs: Mapping[Any, Any],
        enqueue: bool = True,
        connector: bool = True,
        results: bool = True,
    ) -> None:
        """InvalidArguments naming the first of ``args`` and ``kwargs`` that doesn't bind,
        or a required parameter none gives. At enqueue, what a worker passes in itself
        (``connector`` if the job names one, ``results`` if it is enqueued with
        ``pass_results``) is not required; when the job runs, it has been passed."""
        count = len(args)
        if self.most is not None and count > self.most:
            raise InvalidArguments(
                f"args: {self.name}() takes at most {self.most} positional argument(s), "
                f"got {count}",
                field="args",
            )
        index = min(count, len(self.bound) - 1)
        if kwargs:
            names = kwargs.keys()
            fits = self.any_keyword or names <= self.keywords
            if not fits or not self.bound[index].isdisjoint(names):
                self._refuse_keyword(kwargs, self.bound[index])
        missing = (self.missing_at_enqueue[connector, results] if enqueue else self.missing)[index]
        for name in missing:
            # A positional-only one named in kwargs went to **kwargs, not to it.
            if name not in kwargs or name in self.positional_only:
                raise InvalidArguments(
                    f"args: missing argument {name!r} of {self.name}(){why_missing(name)}",
                    field="args",
                )

    def _refuse_keyword(self, kwargs: Mapping[Any, Any], bound: frozenset[str]) -> None:
        for name in kwargs:
            where = f"kwargs[{shown(name, 60)}]"
            if not isinstance(name, str):
                problem = "keyword names must be strings"
            elif name in bound:
                problem = f"{name!r} is given in args as well"
            elif self.any_keyword or name in self.keywords:
                continue
            elif name in self.positional_only:
                problem = f"{name!r} is positional-only: pass it in args"
            else:
                problem = no_parameter(self.name, name)
            raise InvalidArguments(f"{where}: {problem}", field=where)


def no_parameter(function: str, name: str) -> str:
    """That ``function`` takes no ``name``, and where it goes if it is one of the job's
    options: ``add.enqueue(1, 2, queue="mail")`` reads as Job.enqueue's ``queue=``."""
    from .enqueue import JobSpec

    said = f"{function}() has no parameter {name!r}"
    options = {option.name for option in dataclasses.fields(JobSpec)} - {"task", "args", "kwargs"}
    if name in options:
        said += (
            f" (to set the job's {name}, enqueue with {function}.using({name}=...).enqueue(...))"
        )
    return said


def takes_keyword(func: Callable[..., Any], name: str) -> bool:
    """Whether ``func`` can be called with ``name=``: a parameter of that name that a
    keyword can give, or ``**kwargs``. True for a callable whose parameters Python
    can't tell (its calls are not checked)."""
    try:
        parameters = inspect.signature(func, follow_wrapped=False).parameters
    except (TypeError, ValueError):
        return True
    parameter = parameters.get(name)
    if parameter is not None and parameter.kind in KEYWORD:
        return True
    return any(p.kind is P.VAR_KEYWORD for p in parameters.values())


def passed_in(connector: bool, results: bool) -> frozenset[str]:
    """What the worker passes in itself: a connector to a job that names one
    (``connector``), its dependencies' results to one enqueued with ``pass_results``."""
    return frozenset(
        name for name, passed in (("connector", connector), ("results", results)) if passed
    )


def why_missing(name: str) -> str:
    """What a refusal adds for a missing ``name``: a connector is passed only to a job
    that names one, results only to a job enqueued with pass_results=True."""
    if name == "connector":
        return " (the job names no connector: pass connector=)"
    if name == "results":
        return " (its dependencies' results are passed only with pass_results=True)"
    return ""


def _name(func: Callable[..., Any]) -> str:
    """What a refusal calls ``func``: its qualified name, or its class's, never its repr
    (a partial's or an instance's shows the values it holds, a secret among them, and
    the refusal goes to an HTTP client and into the job's error)."""
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else type(func).__qualname__
