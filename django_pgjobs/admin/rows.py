"""The job list's rows as Django's admin writes them, without its per-cell machinery.

Django's ``items_for_result`` looks up each cell's field, formats its value,
reverses the row's URL and merges the list's filters into it for every link, and
escapes the finished cell again: rendering a page of 50 jobs took twice as long as
the rest of the page. Here each row's URL comes from one template per page and
each cell is written once, and a row is one string. The HTML is Django's, cell
for cell (a test compares the two); lists that edit rows or pick one for a popup
use Django's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.contrib.admin.templatetags.admin_list import (
    ResultList,
    items_for_result,
    result_headers,
    result_hidden_fields,
)
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import display_for_value
from django.contrib.admin.views.main import ChangeList
from django.utils import formats
from django.utils.html import conditional_escape, escape
from django.utils.safestring import SafeString

from ..templatetags.pgjobs_admin import escaped

#: A primary key no job has, to find where a row's id goes in its URL.
_SENTINEL = 987_654_321_987_654_321


def result_list(cl: ChangeList) -> dict[str, Any]:
    """The context of Django's ``{% result_list cl %}``, with rows from ``rows``."""
    headers = list(result_headers(cl))
    return {
        "cl": cl,
        "result_hidden_fields": list(result_hidden_fields(cl)),
        "result_headers": headers,
        "num_sorted_fields": sum(1 for h in headers if h["sortable"] and h["sorted"]),
        "results": list(rows(cl)),
    }


def rows(cl: ChangeList) -> Iterator[ResultList]:
    pk_name = cl.lookup_opts.pk.attname
    columns = [(name, _cell_value(cl, name, pk_name)) for name in cl.list_display]
    if cl.formset or cl.is_popup or cl.to_field or any(v is None for _, v in columns):
        for result in cl.result_list:  # what Django's own does, unchanged
            yield ResultList(None, items_for_result(cl, result, None))
        return
    admin = cl.model_admin
    empty = conditional_escape(admin.get_empty_value_display())
    url = add_preserved_filters(
        {"preserved_filters": cl.preserved_filters, "opts": cl.opts},
        cl.url_for_result(cl.model(pk=_SENTINEL)),
    )
    before, _, after = escape(url).partition(str(_SENTINEL))
    links = set(cl.list_display_links or cl.list_display[:1])
    for result in cl.result_list:
        cells, first = [], True
        link = f"{before}{escape(str(result.pk))}{after}"
        for name, value in columns:
            if name == "action_checkbox":
                cells.append(f'<td class="action-checkbox">{value(result)}</td>')
                continue
            shown = _shown(value(result), empty)
            if name in links:
                tag, first = ("th" if first else "td"), False
                cell = f'<{tag} class="field-{name}"><a href="{link}">{shown}</a></{tag}>'
            else:
                cell = f'<td class="field-{name}">{shown}</td>'
            cells.append(cell)
        # One item per row: the template renders each item once, 400 a page before.
        yield ResultList(None, [SafeString("".join(cells))])


def _shown(value: Any, empty: str) -> str:
    """What ``conditional_escape(display_for_value(value, empty))`` makes of a cell's
    value; a string, the usual case, without the other types' checks."""
    if value.__class__ is SafeString:
        return value or empty
    if value.__class__ is str:
        value = value.strip()
        return escaped(value) if value else empty
    return conditional_escape(display_for_value(value, empty))


def _cell_value(cl: ChangeList, name: Any, pk_name: str) -> Callable[[Any], Any] | None:
    """A function of a row giving what Django's ``lookup_field`` gives for column
    ``name``: the primary key or a method of the admin; None for any other column."""
    if name == pk_name:
        if formats.number_format(_SENTINEL) == str(_SENTINEL):
            return lambda result: str(result.pk)  # no thousands separator: as Django's
        return lambda result: formats.number_format(result.pk)
    method = getattr(cl.model_admin, name, None) if isinstance(name, str) else None
    if not callable(method) or getattr(method, "boolean", False):
        return None
    return method
