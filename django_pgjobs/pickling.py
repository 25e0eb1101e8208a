"""Exceptions that survive pickle whole (``PickledWhole``, mixed into each of ours).

Ours cross process boundaries: Django's parallel test runner, multiprocessing, error
reporters that pickle what they send. Python unpickles an exception by calling its
class with ``args``, the message only for ours, whose ``__init__`` takes the values
the message is made of: it raised a TypeError (``ConnectorThrottled``,
``InvalidOption``) or made a message of the message (``UnknownQueue``).
"""

from __future__ import annotations

from typing import Any


class PickledWhole:
    """Mixed into an exception: pickled as its class, ``args`` and attributes, and
    rebuilt from them without calling its ``__init__`` again."""

    args: tuple[Any, ...]

    def __reduce__(self) -> tuple[Any, ...]:
        return (unpickled, (type(self), self.args, vars(self)))


def unpickled(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    """The exception ``PickledWhole.__reduce__`` describes (``__new__`` sets ``args``)."""
    error = cls.__new__(cls, *args)
    error.__dict__.update(state)
    return error
