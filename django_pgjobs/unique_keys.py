"""The key a ``unique`` or ``unique_for`` task derives from its arguments: a key of
the call, not of how it was written. ``report.enqueue(7)``, ``report.enqueue(report_id=7)``
and ``report.enqueue(7, fmt="pdf")`` (``fmt`` defaulting to "pdf") are one call of the
function, so one key; the key used to be of ``[args, kwargs]`` as given, and they made
three jobs."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .exceptions import InvalidArguments

if TYPE_CHECKING:
    from .tasks import Task

P = inspect.Parameter


class CallKey:
    """A task function's parameters, read once per task (``Task.call_key``): each
    job's arguments are bound to them by name as a call would bind them, and the key
    is of that mapping as canonical JSON (sorted keys). An argument whose JSON is its
    parameter's default's counts as left out (the default applied, then taken out
    again): ``f(7)`` and ``f(7, fmt="pdf")`` are one mapping, ``{"report_id": 7}``.

    Left out rather than applied, so that a parameter with a default added to a task,
    or a default changed, leaves the keys of calls that don't pass it as they were:
    jobs enqueued before and after such a deploy, stored alike and run alike, keep
    one key. A default is compared as the JSON a caller passing it would store (for
    a typed task, as its converter stores it); one that no JSON holds (a sentinel
    ``object()``) can't be passed, and is no default to compare with. ``*args`` and
    ``**kwargs`` are keyed as their list and dict, by name like the rest; empty,
    as left out."""

    def __init__(self, signature: inspect.Signature, defaults: dict[str, str]) -> None:
        self.signature = signature
        #: Parameter name -> its default's JSON text, as ``_encoded`` writes it.
        self.defaults = defaults

    @classmethod
    def of(cls, task: Task[Any, Any]) -> CallKey | None:
        """The call key of ``task``'s function; None if Python can't tell its
        parameters (some builtins): its key is then of the arguments as given."""
        try:
            # The parameters its arguments were checked against at enqueue: a typed
            # task's Signature follows __wrapped__, a plain task's Binding does not.
            signature = inspect.signature(task.func, follow_wrapped=task.typed)
        except (TypeError, ValueError):
            return None
        converters = {}
        if task.signature is not None:
            converters = dict(task.signature.positional) | task.signature.keyword
        defaults: dict[str, str] = {}
        for name, parameter in signature.parameters.items():
            if parameter.kind is P.VAR_POSITIONAL:
                defaults[name] = "[]"
            elif parameter.kind is P.VAR_KEYWORD:
                defaults[name] = "{}"
            elif parameter.default is not P.empty:
                stored = _as_stored(parameter.default, converters.get(name))
                if stored is not None:
                    defaults[name] = stored
        return cls(signature, defaults)

    def arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """``args`` and ``kwargs`` by parameter name, without those equal to their
        default. A required parameter not given is left out too: enqueue has checked
        the call by now, and a worker passes ``connector`` and ``results`` in itself."""
        try:
            bound = self.signature.bind_partial(*args, **kwargs)
        except TypeError as error:  # enqueue's own check refuses these first
            raise InvalidArguments(f"args: {error}", field="args") from None
        defaults = self.defaults
        return {
            name: value
            for name, value in bound.arguments.items()
            if name not in defaults or _encoded(value) != defaults[name]
        }


def _as_stored(default: Any, converter: Any) -> str | None:
    """The JSON text a job passing ``default`` would store, or None if no JSON holds
    it (or its typed parameter's converter refuses it)."""
    try:
        value = default if converter is None else converter.dump(converter.parse(default, 1))
        return _encoded(value)
    except Exception:  # whatever a converter or json raises: nothing to compare with
        return None


def derive(name: str, call_key: CallKey | None, args: Sequence[Any], kwargs: Any) -> str:
    """The unique key of a job of task ``name`` with these (checked) arguments:
    the name and 32 hex digits of a SHA-256 of the call (``CallKey``)."""
    call = [list(args), kwargs] if call_key is None else call_key.arguments(args, kwargs)
    return f"{name}:{hashlib.sha256(_encoded(call).encode()).hexdigest()[:32]}"


def _encoded(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
