"""A JSON form field for the admin that refuses what PostgreSQL can't store.

Django's ``forms.JSONField`` accepts any JSON: a ``"\\u0000"`` then fails the
INSERT (``jsonb`` has no NUL), a lone surrogate fails it too and also the page
that shows the form again, deeply nested brackets raise ``RecursionError`` while
parsing, and an integer of over 4,300 digits ``ValueError``. Each is a 500. This
field turns them into form errors.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput


def unstorable_text(value: Any) -> str | None:
    """What in a JSON value PostgreSQL can't store (``jsonb`` refuses NUL and lone
    surrogates, in strings and in keys), or None. Walks without recursion."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "NUL characters (\\u0000) can't be stored"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "lone surrogates (\\ud800-\\udfff) can't be stored"
    return None


class StorableJSONField(forms.JSONField):
    default_error_messages = {
        "too_deep": "This JSON is nested too deeply.",
        "too_long": "This JSON has an integer of more than 4300 digits, which Python can't read.",
    }

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except RecursionError:
            raise ValidationError(self.error_messages["too_deep"], code="too_deep") from None
        except ValueError:  # not JSONDecodeError (Django's "Enter a valid JSON."): int digits
            raise ValidationError(self.error_messages["too_long"], code="too_long") from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except (RecursionError, ValueError):
            return InvalidJSONInput(data)

    def validate(self, value: Any) -> None:
        super().validate(value)
        problem = unstorable_text(value)
        if problem:
            raise ValidationError(problem, code="unstorable")

    def prepare_value(self, value: Any) -> Any:
        shown = super().prepare_value(value)
        if isinstance(shown, str) and unstorable_text(shown):
            # A lone surrogate can't be sent in a page: show it escaped, as typed.
            return json.dumps(value, ensure_ascii=True, cls=self.encoder)
        return shown
