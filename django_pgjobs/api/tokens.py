"""API tokens: issued once in clear, stored as SHA-256, checked on every request.

Tokens are 256 random bits, so a plain SHA-256 is enough to store them (a slow
password hash protects guessable secrets, which these are not) and lets the
lookup be one indexed query.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from .. import conf, limits, shown
from ..connectors.store import CONNECTOR_NAME
from ..exceptions import InvalidOption
from ..models import ApiToken, Connector, Queue
from ..queues import QUEUE_NAME

PREFIX = "pgj_"
#: Most bytes of JSON text of a token's queues, and of its connectors, read on a
#: request. Each name takes its length and 4 bytes more (its quotes, the ", " after
#: it): 14,925 names of 63 characters (the longest queue name), 9,615 of 100 (the
#: longest connector name), 71,428 of 10. ["*"] grants every queue.
MAX_SCOPE_BYTES = 1_000_000
SCOPES = ("queues", "connectors")
#: Most names of each scope a warning of ``unknown_names_said`` names, each with the
#: known name closest to it (a difflib pass over them), then how many more.
MAX_UNKNOWN_SAID = 5
#: last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenRefused(Exception):
    """Why a request's token does not authenticate it (always a 401)."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate() -> tuple[str, str, str]:
    """A new token: (the token itself, its digest to store, its prefix to show)."""
    plain = PREFIX + secrets.token_urlsafe(32)
    return plain, digest(plain), plain[:12]


def issue(
    name: str,
    queues: Iterable[str],
    *,
    can_enqueue: bool = True,
    can_read: bool = True,
    can_run: bool = False,
    expires_at: datetime | None = None,
    connectors: Iterable[str] = (),
) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the token itself, which is never stored.

    Refuses (InvalidOption, nothing written) what the row can't hold or a request
    could never match: a name of no text or over 100 characters, queues or
    connectors that are not lists of their names (or ``"*"``), a flag that is not a
    bool, an ``expires_at`` that is no aware time within years 1-9999 (with USE_TZ
    off, a naive one in the default time zone too). A NUL in the
    name, or a name too long, reached the database as a DataError."""
    limits.text(name, "name", ApiToken._meta.get_field("name").max_length)
    for flag, value in (("can_enqueue", can_enqueue), ("can_read", can_read), ("can_run", can_run)):
        limits.boolean(value, flag)
    if expires_at is not None:
        expires_at = limits.stored_moment(expires_at, "expires_at")
    plain, hashed, prefix = generate()
    token = ApiToken.objects.using(conf.get("DATABASE")).create(
        name=name,
        token_hash=hashed,
        prefix=prefix,
        queues=scope(queues, "queues", QUEUE_NAME),
        connectors=scope(connectors, "connectors", CONNECTOR_NAME),
        can_enqueue=can_enqueue,
        can_read=can_read,
        can_run=can_run,
        expires_at=expires_at,
    )
    return token, plain


def scope(names: Iterable[Any], field: str, pattern: re.Pattern[str]) -> list[str]:
    """``names`` as a token stores them: a list of names ``pattern`` matches, or ``"*"``."""
    limits.no_string(names, field, "names")
    listed = list(names)
    for name in listed:
        if not (name == "*" or (isinstance(name, str) and pattern.match(name))):
            raise InvalidOption(field, f"{limits.shown(name)} is not a name (nor '*')")
    return listed


def unknown_names_said(queues: Iterable[str], connectors: Iterable[str]) -> list[str]:
    """What a token's scope names that no queue or connector has, one sentence each,
    with the name it may have meant: a typo (``mial``) made a token every request for
    ``mail`` was refused with, and nothing said so. A warning only: a token may name a
    queue or a connector created later. For ``issue_api_token`` and the admin."""
    using = conf.get("DATABASE")
    stored = Queue.objects.using(using).values_list("name", flat=True)
    said = _unknown("queue", queues, {*conf.get("QUEUES"), *stored})
    named = Connector.objects.using(using).values_list("name", flat=True)
    return said + _unknown("connector", connectors, set(named))


def _unknown(kind: str, given: Iterable[str], known: set[str]) -> list[str]:
    unknown = [name for name in dict.fromkeys(given) if name != "*" and name not in known]
    said = []
    for name in unknown[:MAX_UNKNOWN_SAID]:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "yet"
        said.append(
            f"no {kind} is called {name!r} ({hint}); the token names it all the same, and "
            "a request for it is refused until it exists"
        )
    if len(unknown) > MAX_UNKNOWN_SAID:
        said.append(f"and {len(unknown) - MAX_UNKNOWN_SAID} more {kind} name(s) no {kind} has")
    return said


def regenerate(token: ApiToken) -> str:
    """Give an existing token a new value (the old one stops working); returns it."""
    plain, token.token_hash, token.prefix = generate()
    token.save(update_fields=["token_hash", "prefix"])
    return plain


def authenticate(header: str | None, now: datetime | None = None) -> ApiToken:
    """The token of an ``Authorization: Bearer ...`` header, or TokenRefused. A given
    ``now`` is checked as ``drain(now=)``'s is: it is written as the token's last use."""
    now = limits.given_now(now) or timezone.now()
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise TokenRefused("send the token as 'Authorization: Bearer <token>'")
    found = ApiToken.objects.using(conf.get("DATABASE")).filter(token_hash=digest(value.strip()))
    token = shown.within(found, SCOPES, MAX_SCOPE_BYTES).first()
    if token is None:
        raise TokenRefused("unknown token")
    # Before the scopes: a revoked or expired token told to fix its scopes in the admin
    # was refused again once they were fixed.
    if not token.active:
        raise TokenRefused("this token was revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise TokenRefused("this token has expired")
    if too_large := shown.unpack(token, SCOPES, MAX_SCOPE_BYTES, verb="read"):
        # Each request would load them whole: 2 million queue names written by SQL
        # took 530 MB to read and show. Such a token grants nothing until trimmed.
        said = "; ".join(f"{name}: {why}" for name, why in too_large.items())
        raise TokenRefused(
            f"this token's scopes are too large to read ({said}); fix it in the admin"
        )
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        found.update(last_used_at=now)
    return token
