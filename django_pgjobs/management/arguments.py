"""The commands' options read by one rule: numbers (limits.number_in_text) and a
``--host`` (limits.host_name)."""

from __future__ import annotations

import argparse

from django.core.management.base import CommandError

from django_pgjobs import limits
from django_pgjobs.exceptions import InvalidOption


def whole_number(text: str) -> int:
    """An option's whole number, in ASCII digits: argparse's int() read "\u0665" as 5."""
    value = limits.number_in_text(text)
    if value is None:
        raise argparse.ArgumentTypeError(
            f"{limits.shown(text)} is not a whole number written in ASCII digits"
        )
    return int(value)


def number(text: str) -> float:
    """An option's number, in ASCII digits with at most one decimal point: argparse's
    float() read "\u0665", "nan" and "inf" as numbers."""
    value = limits.number_in_text(text, fraction=True)
    if value is None:
        raise argparse.ArgumentTypeError(
            f"{limits.shown(text)} is not a number written in ASCII digits"
        )
    return float(value)


def host(value: str) -> str:
    """``--host`` as worker rows record it (``limits.host_name``), else CommandError: a
    shell's byte no UTF-8 holds, which Python reads from argv as a lone surrogate, was
    psycopg's UnicodeEncodeError (a NUL failed in the query), and "" named this host."""
    try:
        return limits.host_name(value, "--host")
    except InvalidOption as problem:
        raise CommandError(f"{problem}: no worker process records such a host") from None
