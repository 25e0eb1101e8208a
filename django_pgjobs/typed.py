"""Typed task arguments: a ``@task(typed=True)``'s signature checks what is enqueued,
turns it into the JSON that is stored, and turns that JSON back into the typed values
the worker passes in.

Each parameter's annotation becomes a ``Converter`` when the task is defined (an
annotation no converter can store fails the decorator): ``parse`` takes a value in its
Python form or its JSON form (a ``date`` or ``"2026-01-31"``) and returns the Python
form, or raises ``Refused`` saying what was expected; ``dump`` turns a parsed value into
JSON; ``schema`` is its JSON Schema, for the OpenAPI description. Enqueue is
``dump(parse(value))``, what a worker passes in is ``parse(stored)``.

Supported: ``int``, ``float``, ``str``, ``bool``, ``None``, ``Any`` (and parameters without
annotation), ``Decimal``, ``date``, ``datetime``, ``time``, ``timedelta``, ``UUID``,
enums, ``Literal``, ``list``/``tuple``/``set``/``frozenset``/``Sequence``,
``dict``/``Mapping`` with string keys, unions and ``Optional``, ``Annotated``, dataclasses,
``TypedDict``, and pydantic models (when pydantic is installed: an optional extra).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import re
import sys
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from .binding import INJECTED, no_parameter, why_missing
from .exceptions import InvalidArguments, PayloadError
from .limits import shown
from .payload import MAX_DEPTH


class Refused(Exception):
    """A value a converter can't take; ``path`` is filled in on the way out."""

    def __init__(self, problem: str, path: str = "") -> None:
        self.problem, self.path = problem, path
        super().__init__(problem)


class UnsupportedType(TypeError):
    """An annotation of a typed task that its arguments can't be stored as."""


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _got(value: Any) -> str:
    return f"got {type(value).__name__} {shown(value, 60)}"


# -- converters ---------------------------------------------------------------------------


class Converter:
    """One annotation: its ``parse``, ``dump`` and ``schema``. This base takes anything
    (``Any``): what can't be stored as JSON is refused by the payload check after."""

    #: What it expects, for messages.
    expected = "any JSON value"

    def parse(self, value: Any, depth: int) -> Any:
        return value

    def dump(self, value: Any) -> Any:
        return value

    def schema(self, components: dict[str, Any]) -> dict[str, Any]:
        return {}


class Exactly(Converter):
    """``int``, ``float``, ``str``, ``bool``, ``None``: JSON's own, taken as they are
    (no "5" for 5, no True for 1; an int for a float)."""

    NAMES = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.expected = "null" if kind is type(None) else _a(self.NAMES[kind])

    def parse(self, value: Any, depth: int) -> Any:
        kind = self.kind
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Refused(f"expected a number, {_got(value)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise Refused(f"expected a finite number, got {value!r}")
            return value
        if kind is int and isinstance(value, bool):
            raise Refused(f"expected an integer, {_got(value)}")
        if kind is type(None):
            if value is not None:
                raise Refused(f"expected null, {_got(value)}")
            return None
        if not isinstance(value, kind):
            raise Refused(f"expected {self.expected}, {_got(value)}")
        return value

    def schema(self, components: dict[str, Any]) -> dict[str, Any]:
        return {"type": self.NAMES[self.kind]}


class Text(Converter):
    """A type stored as a string: ``date``, ``Decimal``, ``UUID``..., from its own type
    or from that string (``read``); ``write`` makes the string."""

    def __init__(
        self,
        kind: type,
        expected: str,
        read: Callable[[str], Any],
        write: Callable[[Any], str],
        schema: dict[str, Any],
        also: Callable[[Any], Any] | None = None,
    ) -> None:
        self.kind, self.expected, self.read, self.write = kind, expected, read, write
        self._schema, self.also = schema, also

    def parse(self, value: Any, depth: int) -> Any:
        if isinstance(value, self.kind) and not (self.kind is date and isinstance(value, datetime)):
            return self._checked(value)
        if isinstance(value, str):
            try:
                return self._checked(self.read(value))
            except (ValueError, TypeError, ArithmeticError, InvalidOperation):
                pass
        elif self.also is not None:
            found = self.also(value)
            if found is not None:
                return self._checked(found)
        raise Refused(f"expected {self.expected}, {_got(value)}")

    def _checked(self, value: Any) -> Any:
        if isinstance(value, datetime | time) and value.tzinfo is not None:
            try:  # a tzinfo of the caller's that can't say its offset can't be written
                value.isoformat()
            except Exception as error:
                raise Refused(f"its time zone can't say its offset: {error}") from None
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise Refused(f"expected a finite decimal, got {value}")
            if not -DECIMAL_EXPONENT <= value.adjusted() <= DECIMAL_EXPONENT:
                limit = f"1E-{DECIMAL_EXPONENT} to 1E+{DECIMAL_EXPONENT}"
                raise Refused(f"expected a decimal from {limit} (what Python computes with), "
                              f"got {shown(value, 40)}")  # fmt: skip
        return value

    def dump(self, value: Any) -> Any:
        return self.write(value)

    def schema(self, components: dict[str, Any]) -> dict[str, Any]:
        return dict(self._schema)


#: Largest power of ten of a Decimal argument, either way: the default context's
#: (beyond it, arithmetic on the value raises Overflow in the task).
DECIMAL_EXPONENT = 999_999


def _decimal_from_number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _timedelta_from_seconds(value: Any) -> timedelta | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return timedelta(seconds=value)
    except (OverflowError, ValueError):  # NaN, infinity, beyond 999,999,999 days
        return None


def _parse_duration(text: str) -> timedelta:
    from django.utils.dateparse import parse_duration

    parsed = parse_duration(text)
    if parsed is None:
        raise ValueError(text)
    return parsed


def _duration_text(value: timedelta) -> str:
    from django.utils.duration import duration_iso_string

    return duration_iso_string(value)


def _uuid(text: str) -> uuid.UUID:
    return uuid.UUID(text)


TEXT_TYPES: dict[type, Text] = {
    Decimal: Text(Decimal, "a decimal (a Decimal, a number, or text such as '12.50')",
                  Decimal, str, {"type": ["string", "number"], "format": "decimal"},
                  also=_decimal_from_number),
    date: Text(date, "a date (a date, or ISO 8601 text such as '2026-01-31')",
               date.fromisoformat, date.isoformat, {"type": "string", "format": "date"}),
    datetime: Text(datetime, "a datetime (a datetime, or ISO 8601 text such as "
                   "'2026-01-31T09:30:00+01:00')", datetime.fromisoformat, datetime.isoformat,
                   {"type": "string", "format": "date-time"}),
    time: Text(time, "a time (a time, or ISO 8601 text such as '09:30:00')",
               time.fromisoformat, time.isoformat, {"type": "string", "format": "time"}),
    timedelta: Text(timedelta, "a duration (a timedelta, seconds, or ISO 8601 text such as "
                    "'P1DT2H')", _parse_duration, _duration_text,
                    {"type": ["string", "number"], "format": "duration"},
                    also=_timedelta_from_seconds),
    uuid.UUID: Text(uuid.UUID, "a UUID (a UUID, or its text)", _uuid, str,
                    {"type": "string", "format": "uuid"}),
}  # fmt: skip


class OneOf(Converter):
    """An enum (its members, or their values) or a ``Literal`` (its values)."""

    def __init__(self, values: Sequence[Any], enum_class: type[enum.Enum] | None = None) -> None:
        self.values, self.enum_class = list(values), enum_class
        for value in self.values:
            if type(value) not in (str, int, bool, type(None)):
                raise UnsupportedType(f"{shown(value)}: only strings, integers, booleans and None")
        self.expected = "one of " + ", ".join(map(repr, self.values))

    def parse(self, value: Any, depth: int) -> Any:
        if self.enum_class is not None and isinstance(value, self.enum_class):
            return value
        for allowed in self.values:  # 1 and True are different here
            if type(value) is type(allowed) and value == allowed:
                return self.enum_class(allowed) if self.enum_class else allowed
        raise Refused(f"expected {self.expected}, {_got(value)}")

    def dump(self, value: Any) -> Any:
        return value.value if isinstance(value, enum.Enum) else value

    def schema(self, components: dict[str, Any]) -> dict[str, Any]:
        return {"enum": list(self.values)}


class Items(Converter):
    """``list[T]``, ``Sequence[T]``, ``tuple[T, ...]``, ``set[T]``, ``frozenset[T]``:
    a JSON array (or a list, tuple, set or frozenset) of T."""

    def __init__(self, item: Converter, container: type) -> None:
        self.item, self.container = item, container
        self.unique = container in (set, frozenset)
        self.expected = f"a list of {item.expected}"

    def parse(self, value: Any, depth: int) -> Any:
        allowed = (list, tuple, set, frozenset) if self.unique else (list, tuple)
        if not isinstance(value, allowed):
            raise Refused(f"expected {self.expected}, {_got(value)}")
        _deeper(depth)
        parsed = [_at(f"[{index}]", self.item.parse, item, depth + 1)
                  for index, item in enumerate(value)]  # fmt: skip
        try:
            return self.container(parsed)
        except TypeError as error:  # a set of unhashable items
            raise Refused(f"items of a set must be hashable: {error}") from None

    def dump(self, value: Any) -> Any:
        dumped = [self.item.dump(item) for item in value]
        if self.unique:  # a set has no order; its JSON has one, the same each time
            from .payload import dumps

            dumped.sort(key=dumps)
        return dumped

    def schema(self, components: dict[str, Any]) -> dict[str, Any]:
        found = {"type": "array", "items": self.item.schema(components)}
        return {**found, "uniqueItems": True} if self.unique else found


class Fixed(Converter):
    """``tuple[A, B, C]``: an array of exactly those."""

    def __init__(self, items: list[Converter]) -> None:
        self.items = items
        self.expected = f"a list of {len(items)}: " + ", ".join(i.expected for i in items)

    def parse(self, value: Any, depth: int) -> Any:
        if not isinstance(value, list | tuple) or len(value) != len(self.items):
            raise Refused(f"expected {self.expected}, {_got(value)}")
        _deeper(depth)
        pairs = enumerate(zip(self.items, value, strict=True))
        return tuple(
            _at(f"[{index}]", item.parse, part, depth + 1) for index, (item, part) in pairs
        )

    def dump(self, value: Any) -> Any:
        return [item.dump(part) for item, part in zip(self.items, value, strict=True)]

    def schema(self, components: dict[str, Any]) -> dict[str, Any]:
        count = len(self.items)
        prefix = [item.schema(components) for item in self.items]
        return {"type": "array", "prefixItems": prefix, "minItems": count, "maxItems": count}


class Keyed(Converter):
    """``dict[str, T]``, ``Mapping[str, T]``: a JSON object of T."""

    def __init__(self, value: Converter) -> None:
        self.value = value
        self.expected = f"an object of {value.expected}"

    def parse(self, value: Any, depth: int) -> Any:
        if not isinstance(value, Mapping):
            raise Refused(f"expected {self.expected}, {_got(value)}")
        _deeper(depth)
        parsed = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise Refused(f"keys must be strings, got {type(key).__name__} {shown(key, 40)}")
            parsed[key] = _at(f"[{key!r}]", self.value.parse, item, depth + 1)
        return parsed

    def dump(self, value: Any) -> Any:
        return {key: self.value.dump(item) for key, item in value.items()}

    def schema(self, components: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": self.value.schema(components)}


class AnyOf(Converter):
    """A union: the first member that takes the value, the members of the value's own
    type first (so ``str | date`` keeps a date a date at enqueue)."""

    def __init__(self, members: list[Converter]) -> None:
        self.members = members
        self.expected = " or ".join(member.expected for member in members)

    def parse(self, value: Any, depth: int) -> Any:
        refusals = []
        for member in sorted(self.members, key=lambda m: not _own_type(m, value)):
            try:
                return member.parse(value, depth)
            except Refused as refused:
                refusals.append((member, refused))
        # Optional[X] given something: what X says of it is what helps.
        meant = [pair for pair in refusals if not _is_null(pair[0])]
        if len(meant) == 1 and value is not None:
            raise meant[0][1]
        raise Refused(f"expected {self.expected}, {_got(value)}")

    def dump(self, value: Any) -> Any:
        for member in sorted(self.members, key=lambda m: not _own_type(m, value)):
            try:
                member.parse(value, 0)
            except Refused:
                continue
            return member.dump(value)
        return value

    def schema(self, components: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [member.schema(components) for member in self.members]}


def _is_null(converter: Converter) -> bool:
    return isinstance(converter, Exactly) and converter.kind is type(None)


def _own_type(converter: Converter, value: Any) -> bool:
    kind = getattr(converter, "kind", None) or getattr(converter, "cls", None)
    return isinstance(kind, type) and type(value) is kind


class Fields(Converter):
    """A dataclass or a ``TypedDict``: a JSON object of its fields (or, for a dataclass,
    an instance, whose fields are checked too)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.name = f"{cls.__module__}.{cls.__qualname__}"
        self.expected = f"{_a(cls.__qualname__)} (or an object of its fields)"
        self.fields: dict[str, Converter] = {}
        self.required: set[str] = set()
        self.is_dataclass = dataclasses.is_dataclass(cls)

    def resolve(self, convert: Callable[[Any], Converter]) -> None:
        hints = typing.get_type_hints(self.cls, include_extras=True)
        if self.is_dataclass:
            for found in dataclasses.fields(self.cls):
                if not found.init:
                    continue
                self.fields[found.name] = _named(found.name, convert, hints.get(found.name, Any))
                missing = dataclasses.MISSING
                if found.default is missing and found.default_factory is missing:
                    self.required.add(found.name)
        else:  # TypedDict: Required/NotRequired, else its totality, say which keys must be
            total = getattr(self.cls, "__total__", True)
            for name, hint in hints.items():
                self.fields[name] = _named(name, convert, hint)
                qualifier = typing.get_origin(hint)
                if qualifier is typing.Required or (qualifier is not typing.NotRequired and total):
                    self.required.add(name)

    def parse(self, value: Any, depth: int) -> Any:
        if self.is_dataclass and isinstance(value, self.cls):
            value = {name: getattr(value, name) for name in self.fields}
        if not isinstance(value, Mapping):
            raise Refused(f"expected {self.expected}, {_got(value)}")
        _deeper(depth)
        unknown = [key for key in value if key not in self.fields]
        if unknown:
            raise Refused(f"unknown field {shown(unknown[0], 40)} of {self.cls.__qualname__}; "
                          f"its fields: {', '.join(self.fields)}")  # fmt: skip
        missing = sorted(self.required - set(value))
        if missing:
            raise Refused(f"missing field {missing[0]!r} of {self.cls.__qualname__}")
        parsed = {name: _at(f".{name}", self.fields[name].parse, item, depth + 1)
                  for name, item in value.items()}  # fmt: skip
        if not self.is_dataclass:
            return parsed
        try:
            return self.cls(**parsed)
        except Exception as error:  # its __post_init__ refused the values
            raise Refused(f"{self.cls.__qualname__}: {type(error).__name__}: {error}") from None

    def dump(self, value: Any) -> Any:
        if self.is_dataclass:
            return {name: self.fields[name].dump(getattr(value, name)) for name in self.fields}
        return {name: self.fields[name].dump(item) for name, item in value.items()}

    def schema(self, components: dict[str, Any]) -> dict[str, Any]:
        key = component_name(self.name)
        if key not in components:
            components[key] = {}  # a recursive one refers to itself
            components[key] = {
                "type": "object",
                "title": self.cls.__qualname__,
                "properties": {name: f.schema(components) for name, f in self.fields.items()},
                "required": sorted(self.required),
                "additionalProperties": False,
            }
        return {"$ref": f"#/components/schemas/{key}"}


class Model(Converter):
    """A pydantic model: validated by pydantic, stored as its JSON-mode dump."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.expected = f"{_a(cls.__qualname__)} (or an object of its fields)"

    def parse(self, value: Any, depth: int) -> Any:
        import pydantic

        if isinstance(value, self.cls):
            value = value.model_dump(mode="json")  # validated again: it may have been changed
        try:
            return self.cls.model_validate(value)
        except pydantic.ValidationError as error:
            first = error.errors()[0]
            where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                            for part in first.get("loc", ()))  # fmt: skip
            raise Refused(f"{self.cls.__qualname__}{where}: {first.get('msg')}") from None
        except (ValueError, TypeError, RecursionError) as error:
            raise Refused(f"{self.cls.__qualname__}: {type(error).__name__}: {error}") from None

    def dump(self, value: Any) -> Any:
        return value.model_dump(mode="json")

    def schema(self, components: dict[str, Any]) -> dict[str, Any]:
        key = component_name(f"{self.cls.__module__}.{self.cls.__qualname__}")
        if key not in components:
            found = self.cls.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(found.pop("$defs", {}))
            components[key] = found
        return {"$ref": f"#/components/schemas/{key}"}


def component_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _deeper(depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise Refused(f"nested more than {MAX_DEPTH} levels deep")


def _at(step: str, parse: Callable[[Any, int], Any], value: Any, depth: int) -> Any:
    """``parse(value, depth)``, a refusal's path starting with ``step``."""
    try:
        return parse(value, depth)
    except Refused as refused:
        refused.path = step + refused.path
        raise


def _named(name: str, convert: Callable[[Any], Converter], hint: Any) -> Converter:
    try:
        return convert(hint)
    except UnsupportedType as error:
        raise UnsupportedType(f"{name}: {error}") from None


# -- from annotations to converters --------------------------------------------------------

_EXACT = (int, float, str, bool, type(None))
#: What a TypedDict's keys may be wrapped in: they say whether the key is required.
_QUALIFIERS = {typing.Required, typing.NotRequired, getattr(typing, "ReadOnly", typing.Required)}
_SEQUENCES = {list: list, tuple: tuple, set: set, frozenset: frozenset, Sequence: list,
              Iterable: list, typing.Sequence: list}  # fmt: skip


def _is_pydantic_model(hint: Any) -> bool:
    pydantic = sys.modules.get("pydantic")  # imported by the user's code if they use it
    base = getattr(pydantic, "BaseModel", None)
    return base is not None and isinstance(hint, type) and issubclass(hint, base)


class Compiler:
    """Converters for annotations; one per dataclass, so recursive ones work."""

    def __init__(self) -> None:
        self.classes: dict[type, Fields] = {}

    def convert(self, hint: Any) -> Converter:
        if hint is Any or hint is object or hint is inspect.Parameter.empty:
            return Converter()
        if hint is None:
            hint = type(None)
        origin, arguments = typing.get_origin(hint), typing.get_args(hint)
        if origin is typing.Annotated or origin in _QUALIFIERS:
            return self.convert(arguments[0])
        if hint in _EXACT:
            return Exactly(hint)
        if hint in TEXT_TYPES:
            return TEXT_TYPES[hint]
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return OneOf([member.value for member in hint], hint)
        if origin is typing.Literal:
            return OneOf(arguments)
        if origin in (typing.Union, types.UnionType):
            return AnyOf([self.convert(argument) for argument in arguments])
        if origin is tuple and arguments and arguments[-1] is not Ellipsis:
            return Fixed([self.convert(argument) for argument in arguments])
        if hint in _SEQUENCES or origin in _SEQUENCES:
            item = self.convert(arguments[0]) if arguments else Converter()
            return Items(item, _SEQUENCES[origin or hint])
        if hint in (dict, Mapping) or origin in (dict, Mapping, typing.Mapping):
            if arguments and arguments[0] not in (str, Any):
                raise UnsupportedType(f"{_name(hint)}: JSON objects have string keys only")
            return Keyed(self.convert(arguments[1]) if arguments else Converter())
        if isinstance(hint, type) and (dataclasses.is_dataclass(hint) or typing.is_typeddict(hint)):
            return self._fields(hint)
        if _is_pydantic_model(hint):
            return Model(hint)
        raise UnsupportedType(
            f"{_name(hint)} can't be stored as JSON and read back; use JSON's own types, "
            "Decimal, date, datetime, time, timedelta, UUID, an enum, a Literal, a "
            "dataclass, a TypedDict or a pydantic model (or Any, unchecked)"
        )

    def _fields(self, cls: type) -> Fields:
        found = self.classes.get(cls)
        if found is None:
            found = self.classes[cls] = Fields(cls)
            found.resolve(self.convert)
        return found


def _name(hint: Any) -> str:
    return getattr(hint, "__qualname__", None) or repr(hint)


# -- a task's signature ------------------------------------------------------------------------


class Signature:
    """The parameters of a typed task, each with its converter."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.name = getattr(func, "__qualname__", repr(func))
        parameters = inspect.signature(func).parameters
        hints = typing.get_type_hints(func, include_extras=True)
        compiler = Compiler()
        self.positional: list[tuple[str, Converter]] = []
        self.keyword: dict[str, Converter] = {}
        self.required: list[str] = []
        self.positional_only: set[str] = set()
        #: A ``connector`` parameter without default: given only to a job naming one.
        self.needs_connector = False
        #: A ``results`` parameter without default: given only with pass_results=True.
        self.needs_results = False
        self.var_positional: Converter | None = None
        self.var_keyword: Converter | None = None
        P = inspect.Parameter
        for name, parameter in parameters.items():
            if name in INJECTED:  # the worker's object (a connector's class), not JSON
                converter = Converter()
            else:
                converter = _named(name, compiler.convert, hints.get(name, Any))
            if parameter.kind is P.VAR_POSITIONAL:
                self.var_positional = converter
                continue
            if parameter.kind is P.VAR_KEYWORD:
                self.var_keyword = converter
                continue
            if parameter.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD):
                self.positional.append((name, converter))
            if parameter.kind is P.POSITIONAL_ONLY:
                self.positional_only.add(name)
            if parameter.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY):
                self.keyword[name] = converter
            if parameter.default is P.empty and name not in INJECTED:
                self.required.append(name)
            elif parameter.default is P.empty and name == "connector":
                self.needs_connector = True
            elif parameter.default is P.empty and name == "results":
                self.needs_results = True

    def parse(
        self, args: Any, kwargs: Any, connector: bool = True, results: bool = True
    ) -> tuple[list[Any], dict[str, Any]]:
        """``args`` and ``kwargs`` bound to the parameters as Python would, each value
        in its parameter's type; InvalidArguments naming the first that doesn't fit.
        ``connector``: whether the job names one (then the worker passes it); ``results``:
        whether it is enqueued with pass_results (then the worker passes them)."""
        if not isinstance(args, list | tuple):
            raise PayloadError(f"args must be a list, not {type(args).__name__}", field="args")
        if not isinstance(kwargs, dict):
            raise PayloadError(f"kwargs must be a dict, not {type(kwargs).__name__}", "kwargs")
        most = len(self.positional)
        if len(args) > most and self.var_positional is None:
            raise self._refused("args", f"takes at most {most} positional argument(s), "
                                f"got {len(args)}")  # fmt: skip
        bound: set[str] = set()
        parsed_args = []
        for index, value in enumerate(args):
            if index < most:
                name, converter = self.positional[index]
                bound.add(name)
            else:
                name, converter = "*args", self.var_positional  # type: ignore[assignment]
            parsed_args.append(self._parse(f"args[{index}]", converter, value, name))
        parsed_kwargs = {}
        for name, value in kwargs.items():
            path = f"kwargs[{shown(name, 60)}]"
            if not isinstance(name, str):
                raise self._refused(path, "keyword names must be strings")
            converter = self.keyword.get(name)
            if converter is None:
                if name in self.positional_only:
                    raise self._refused(path, f"{name!r} is positional-only: pass it in args")
                if self.var_keyword is None:
                    raise self._refused(path, no_parameter(self.name, name))
                converter = self.var_keyword
            elif name in bound:
                raise self._refused(path, f"{name!r} is given in args as well")
            bound.add(name)
            parsed_kwargs[name] = self._parse(path, converter, value, name)
        missing = [name for name in self.required if name not in bound]
        if not connector and self.needs_connector and "connector" not in bound:
            missing.append("connector")
        if not results and self.needs_results and "results" not in bound:
            missing.append("results")
        if missing:
            why = why_missing(missing[0])
            raise self._refused("args", f"missing argument {missing[0]!r} of {self.name}(){why}")
        return parsed_args, parsed_kwargs

    def dump(
        self, args: Any, kwargs: Any, connector: bool = True, results: bool = True
    ) -> tuple[list[Any], dict[str, Any]]:
        """Checked ``args`` and ``kwargs`` as the JSON that is stored."""
        parsed_args, parsed_kwargs = self.parse(args, kwargs, connector, results)
        converters = self._converters(len(parsed_args))
        pairs = zip(converters, parsed_args, strict=True)
        return (
            [converter.dump(value) for converter, value in pairs],
            {name: self._keyword(name).dump(value) for name, value in parsed_kwargs.items()},
        )

    def _converters(self, count: int) -> list[Converter]:
        found = [converter for _, converter in self.positional[:count]]
        return found + [self.var_positional] * (count - len(found))  # type: ignore[list-item]

    def _keyword(self, name: str) -> Converter:
        return self.keyword.get(name) or self.var_keyword  # type: ignore[return-value]

    def _parse(self, path: str, converter: Converter, value: Any, name: str) -> Any:
        try:
            return converter.parse(value, 1)
        except Refused as refused:
            where = path + refused.path
            raise self._refused(where, refused.problem, name) from None
        except RecursionError:
            raise self._refused(path, "nested too deeply", name) from None

    def _refused(self, where: str, problem: str, name: str = "") -> InvalidArguments:
        of = f" (parameter {name!r})" if name and not where.startswith(f"kwargs[{name!r}") else ""
        return InvalidArguments(f"{where}{of}: {problem}", field=where)

    def schema(self, components: dict[str, Any]) -> dict[str, Any]:
        """The JSON Schema of ``{"args": [...], "kwargs": {...}}`` for this signature;
        the schemas of dataclasses and models it names go into ``components``."""
        args: dict[str, Any] = {"type": "array"}
        if self.positional:
            args["prefixItems"] = [converter.schema(components) for _, converter in self.positional]
        rest, more = self.var_positional, self.var_keyword
        args["items"] = False if rest is None else rest.schema(components)
        kwargs: dict[str, Any] = {
            "type": "object",
            "properties": {name: c.schema(components) for name, c in self.keyword.items()},
            "additionalProperties": False if more is None else more.schema(components),
        }
        positional = {name for name, _ in self.positional}
        only_keyword = [name for name in self.required if name not in positional]
        if only_keyword:
            kwargs["required"] = only_keyword
        return {"args": args, "kwargs": kwargs}

    def describe(self) -> str:
        """The parameters and what each expects, for people (the admin's schedule form)."""
        named = dict(self.positional) | self.keyword
        return "; ".join(f"{name}: {converter.expected}" for name, converter in named.items())
