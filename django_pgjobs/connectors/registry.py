"""Connector kinds by name: the built-in ones and those a project registers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from .. import limits
from ..payload import names_in
from .base import ConnectorKind
from .errors import ConnectorMisconfigured, UnknownConnectorKind

if TYPE_CHECKING:
    from ..models import Connector

K = TypeVar("K", bound=type[ConnectorKind])

_kinds: dict[str, type[ConnectorKind]] = {}


def register_kind(kind_class: K) -> K:
    """Make a kind available to connectors (usable as a class decorator).

    Register in your ``AppConfig.ready()`` (or a module it imports) so that web
    processes and workers both know the kind.
    """
    if not (isinstance(kind_class, type) and issubclass(kind_class, ConnectorKind)):
        raise TypeError(f"{kind_class!r} is not a ConnectorKind subclass")
    if not kind_class.kind:
        raise ValueError(f"{kind_class.__name__}.kind must name the kind")
    _kinds[kind_class.kind] = kind_class
    return kind_class


def get_kind(kind: str) -> type[ConnectorKind]:
    _load_builtins()
    # Of no string, no kind: a list (unhashable) failed the lookup with a TypeError.
    kind_class = _kinds.get(kind) if isinstance(kind, str) else None
    if kind_class is None:
        raise UnknownConnectorKind(kind, sorted(_kinds))
    return kind_class


def kinds() -> dict[str, type[ConnectorKind]]:
    _load_builtins()
    return dict(_kinds)


def validate_connector(connector: Connector) -> None:
    """Raise ``django.core.exceptions.ValidationError`` naming each bad field."""
    from django.core.exceptions import ValidationError

    try:
        kind_class = get_kind(connector.kind)
    except UnknownConnectorKind as error:
        raise ValidationError({"kind": str(error)}) from None
    problems = kind_class.validate(connector.config, names_in(connector.secret_names))
    problems = problems or _new_write_problems(kind_class, connector)
    if problems:
        raise ValidationError(_as_form_errors(problems))


def check_written(connector: Connector) -> None:
    """ValidationError for a config its kind refuses to be written (``write_problems``),
    for ``save()`` without ``full_clean()``; an unknown kind is left to
    ``validate_connector``."""
    from django.core.exceptions import ValidationError

    try:
        kind_class = get_kind(connector.kind)
    except UnknownConnectorKind:
        return
    problems = _new_write_problems(kind_class, connector)
    if problems:
        raise ValidationError(_as_form_errors(problems))


def _new_write_problems(kind_class: type[ConnectorKind], connector: Connector) -> dict[str, str]:
    """What ``write_problems`` finds in the connector's config that its stored row's
    does not have (``ConnectorKind.added_write_problems``). The stored config is read
    only when there is something to forgive."""
    if not kind_class.write_problems(connector.config):
        return {}
    stored_config = None
    if not connector._state.adding and connector.pk is not None:
        rows = type(connector)._default_manager.using(connector._state.db)
        stored = rows.filter(pk=connector.pk, kind=connector.kind).values_list("config", flat=True)
        stored_config = stored.first()  # None: no such row of this kind
    return kind_class.added_write_problems(connector.config, stored_config)


def secret_problems(kind: str, values: dict[str, Any]) -> None:
    """ValidationError (on ``secrets``) for secret values kind ``kind`` refuses; an
    unknown kind is left to ``validate_connector``. Never shows a value."""
    from django.core.exceptions import ValidationError

    if not isinstance(kind, str):  # no kind a row can hold, now or once registered
        raise ValidationError(
            {"kind": f"must be a string naming a connector kind, not {limits.shown(kind)}"}
        )
    try:
        kind_class = get_kind(kind)
    except UnknownConnectorKind:
        return
    problems = kind_class.secret_problems(values)
    if problems:
        raise ValidationError(_as_form_errors(problems))


def check_stored(connector: Connector) -> type[ConnectorKind]:
    """The kind of a stored connector, or ConnectorMisconfigured naming what is wrong."""
    try:
        kind_class = get_kind(connector.kind)
    except UnknownConnectorKind as error:
        raise ConnectorMisconfigured(connector.name, {"kind": str(error)}) from None
    problems = kind_class.validate(connector.config, names_in(connector.secret_names))
    if problems:
        raise ConnectorMisconfigured(connector.name, problems)
    return kind_class


def _as_form_errors(problems: dict[str, str]) -> dict[str, list[str]]:
    # Form fields are "config" and "secrets"; the message keeps the key inside them.
    errors: dict[str, list[str]] = {}
    for field, problem in sorted(problems.items()):
        top, _, key = field.partition(".")
        errors.setdefault(top, []).append(f"{key}: {problem}" if key else problem)
    return errors


_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        from . import command, http, smtp  # noqa: F401 - each registers its kind
