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
from django.contrib.admin.utils import NestedObjects, quote
from django.core.exceptions import ValidationError
from django.db import router
from django.db.models import JSONField, Model, QuerySet, TextField
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.text import capfirst

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
        """Set the listed fields of a row of the list; those over the limit, with why.
        A row of the change page, read already (``get_object``), is left as it is."""
        if "not_shown" not in row.__dict__:
            shown.unpack(row, self.listed_fields, shown.LISTED_BYTES)
        return row.not_shown

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        """The row with each large field read only within ``shown.limit()``, by its id
        or by ``from_field`` (``?_to_field=``); None (the admin's "doesn't exist") for
        a value no row can have."""
        field = self.opts.pk if from_field is None else self.opts.get_field(from_field)
        if field.primary_key:
            value: Any = limits.id_in_text(object_id)
        else:
            try:
                value = field.to_python(object_id)
            except (ValidationError, ValueError):
                value = None
        if value is None:
            return None
        rows = shown.within(self.get_queryset(request), self.large_fields)
        row = rows.filter(**{field.name: value}).first()
        if row is not None:
            shown.unpack(row, self.large_fields)
        return row

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """What a delete page lists, read as Django reads it but for the JSON and text
        columns of the rows deleted with ``objs`` and of the row they belong to."""
        return deleted_objects(objs, request, self.admin_site)

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


def unbounded(model: type[Model]) -> list[str]:
    """The columns of ``model`` a row written by SQL may fill with 255 MB."""
    return [
        field.name
        for field in model._meta.concrete_fields
        if isinstance(field, JSONField | TextField)
    ]


class BoundedNestedObjects(NestedObjects):
    """Django's collector of what a delete page lists, reading no JSON or text column
    of the rows it finds (it shows their ``str()``), nor of the row each belongs to (it
    reads that too): a schedule's delete page loaded each tick and the schedule with
    it whole, 931 MB for 100 MB of arguments and a tick's 100 MB error."""

    def related_objects(self, related_model: Any, related_fields: Any, objs: Any) -> Any:
        rows = super().related_objects(related_model, related_fields, objs)
        parents = [
            f"{field.name}__{name}"
            for field in related_fields
            for name in unbounded(field.related_model)
        ]
        return rows.defer(*unbounded(related_model), *parents)


def deleted_objects(
    objs: Any, request: HttpRequest, admin_site: Any
) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
    """``django.contrib.admin.utils.get_deleted_objects`` with ``BoundedNestedObjects``
    (Django's function names its collector class, so it is followed here)."""
    try:
        using = router.db_for_write(objs[0]._meta.model)
    except IndexError:
        return [], {}, set(), []
    collector = BoundedNestedObjects(using=using, origin=objs)
    collector.collect(objs)
    perms_needed: set[str] = set()

    def format_callback(obj: Any) -> Any:
        opts = obj._meta
        no_edit_link = f"{capfirst(opts.verbose_name)}: {obj}"
        if not admin_site.is_registered(obj.__class__):
            return no_edit_link
        if not admin_site.get_model_admin(obj.__class__).has_delete_permission(request, obj):
            perms_needed.add(opts.verbose_name)
        try:
            url = reverse(
                f"{admin_site.name}:{opts.app_label}_{opts.model_name}_change",
                args=(quote(obj.pk),),
            )
        except NoReverseMatch:
            return no_edit_link
        return format_html('{}: <a href="{}">{}</a>', capfirst(opts.verbose_name), url, obj)

    to_delete = collector.nested(format_callback)
    protected = [format_callback(obj) for obj in collector.protected]
    model_count = {
        model._meta.verbose_name_plural: len(found) for model, found in collector.model_objs.items()
    }
    return to_delete, model_count, perms_needed, protected
