"""Pages of rows whose JSON or text values may be too large to show (schedules,
connectors, worker processes): each value read within a limit, said to be not shown
when over it, and never saved back.

Saving a form writes its fields back: a value not read, being too large, would be
written as empty over the stored one. So such a field is read-only on its change
page (it says the value isn't shown and how large it is), and the row's ``save()``
leaves it as stored (``models.unread_fields``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from .. import limits, shown
from .base import OperatorAdmin

#: The suffix of the read-only stand-in of a field not shown on a change page.
NOT_SHOWN = "_not_shown"


def not_shown_field(name: str) -> Callable[[Any, Any], str]:
    """The display method of ``<name>_not_shown``: why the value is not shown."""

    @admin.display(description=name)
    def display(self: Any, row: Any) -> str:
        return f"{row.not_shown.get(name, '')}; it is kept as stored"

    return display


class LargeValuesAdmin(OperatorAdmin):
    """An admin that reads ``large_fields`` only through ``shown.within``: the list
    reads those it shows (``listed_fields``) within ``shown.LISTED_BYTES`` and none
    other; the change page reads them within ``shown.limit()``."""

    #: JSON or text fields never read whole.
    large_fields: tuple[str, ...] = ()
    #: Those of them that the list shows.
    listed_fields: tuple[str, ...] = ()

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        rows = super().get_queryset(request).defer(*self.large_fields)
        return shown.within(rows, self.listed_fields, shown.LISTED_BYTES)

    def listed(self, row: Any) -> dict[str, str]:
        """Set the listed fields of a row of the list; those over the limit, with why."""
        if "not_shown" not in row.__dict__:
            shown.unpack(row, self.listed_fields, shown.LISTED_BYTES)
        return row.not_shown

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        """The row with each large field read only within ``shown.limit()``; None (the
        admin's "doesn't exist") for an id no row can have."""
        if from_field not in (None, self.opts.pk.name):
            return super().get_object(request, object_id, from_field)
        row_id = limits.id_in_text(object_id)
        if row_id is None:
            return None
        rows = shown.within(self.get_queryset(request), self.large_fields)
        row = rows.filter(pk=row_id).first()
        if row is not None:
            shown.unpack(row, self.large_fields)
        return row

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        unread = getattr(obj, "not_shown", {})
        return [
            (title, {**options, "fields": [self._stand_in(f, unread) for f in options["fields"]]})
            for title, options in super().get_fieldsets(request, obj)
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        unread = getattr(obj, "not_shown", {})
        own = tuple(super().get_readonly_fields(request, obj))
        return own + tuple(f"{name}{NOT_SHOWN}" for name in unread)

    @staticmethod
    def _stand_in(field: Any, unread: dict[str, str]) -> Any:
        return f"{field}{NOT_SHOWN}" if isinstance(field, str) and field in unread else field
