"""Types of the commands' number options, read by one rule (limits.number_in_text)."""

from __future__ import annotations

import argparse

from django_pgjobs import limits


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
