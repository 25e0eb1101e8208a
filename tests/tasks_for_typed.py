"""Typed tasks for tests/test_typed_arguments.py: each returns what it was passed,
described, so a test can see the types the worker passed in."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, NotRequired, TypedDict

import pydantic

from django_pgjobs import task
from django_pgjobs.connectors import ConnectorKind


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    price: Decimal = Decimal("0")


class Address(TypedDict):
    street: str
    postcode: NotRequired[str]


@dataclasses.dataclass
class Node:
    name: str
    children: list[Node] = dataclasses.field(default_factory=list)


class Order(pydantic.BaseModel):
    id: int
    amount: Decimal
    placed: datetime
    lines: list[Line] = []


def described(value: Any) -> Any:
    """``value``'s type and text, recursively, as JSON."""
    if isinstance(value, list | tuple | set | frozenset):
        return [type(value).__name__, [described(item) for item in value]]
    if isinstance(value, dict):
        return ["dict", {key: described(item) for key, item in value.items()}]
    return [type(value).__name__, str(value)]


@task(typed=True)
def invoice(
    when: date,
    total: Decimal,
    ref: uuid.UUID,
    lines: list[Line],
    *,
    colour: Colour = Colour.RED,
    due: datetime | None = None,
    every: timedelta = timedelta(days=1),
    at: time | None = None,
    tags: frozenset[str] = frozenset(),
    pair: tuple[int, str] = (0, ""),
    address: Address | None = None,
    mode: Literal["draft", "final"] = "draft",
    extra: dict[str, Decimal] | None = None,
) -> Any:
    return described(
        {"when": when, "total": total, "ref": ref, "lines": lines, "colour": colour, "due": due,
         "every": every, "at": at, "tags": tags, "pair": pair, "address": address,
         "mode": mode, "extra": extra}
    )  # fmt: skip


@task(typed=True)
def place(order: Order) -> Any:
    return described(order.model_dump())


@task(typed=True)
def tree(root: Node) -> int:
    def count(node: Node) -> int:
        return 1 + sum(count(child) for child in node.children)

    return count(root)


@task(typed=True)
def counted(n: int, /, *rest: float, scale: float = 1.0, **labels: str) -> Any:
    return described({"n": n, "rest": rest, "scale": scale, "labels": labels})


@task(typed=True)
def later(item: Later) -> str:
    return type(item).__name__


@dataclasses.dataclass
class Later:
    """Defined after the task that names it: its signature is built at first use."""

    name: str


@task(typed=True)
def typed_post(payload: dict[str, int], connector: ConnectorKind) -> dict[str, int]:
    """A typed task whose connector comes from its job (none of its own)."""
    return payload


@task(typed=True)
def typed_total(results: list[int], *, scale: int = 1) -> int:
    """A typed gather step: its dependencies' results come from the worker."""
    return sum(results) * scale


@task(typed=True, unique=True)
def unique_invoice(
    when: date, colour: Colour = Colour.RED, *, total: Decimal = Decimal("0")
) -> str:
    """A unique typed task: its key is of the values as stored, defaults too."""
    return f"{when} {colour} {total}"
