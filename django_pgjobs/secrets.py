"""Encryption at rest for connector secrets (Fernet: AES-128-CBC with an HMAC).

Keys come from ``PGJOBS["SECRET_KEYS"]``: the first encrypts, every one
decrypts, so a key is rotated by putting the new one first, running
``manage.py rotate_connector_secrets`` and then dropping the old one. Each
entry is any string with enough entropy; it is stretched into a Fernet key
with HKDF, so a plain ``secrets.token_urlsafe(32)`` will do. Without the
setting, the keys are derived from Django's ``SECRET_KEY`` and
``SECRET_KEY_FALLBACKS``, which rotate the same way.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import conf
from .exceptions import PgJobsError

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

# cryptography is imported where it is used: a worker that never reads a connector's
# secrets would otherwise carry its 8 MB (of a 70 MB worker).

#: Separates these keys from any other use of the same secret (Django's signing,
#: sessions): HKDF with a different ``info`` gives unrelated keys.
KEY_PURPOSE = b"django-pgjobs connector secrets v1"


class SecretsUnreadable(PgJobsError):
    """Stored secrets that no configured key decrypts (a key was dropped too early)."""


class SecretKeysInvalid(SecretsUnreadable):
    """``PGJOBS["SECRET_KEYS"]`` is no list of keys of at least ``MIN_KEY_LENGTH``
    characters: nothing is encrypted or decrypted with it."""


#: Shortest key ``SECRET_KEYS`` takes (check pgjobs.E012 says the same).
MIN_KEY_LENGTH = 32


def configured_keys() -> list[str]:
    """The keys, newest first. ``SECRET_KEYS`` is checked here too, not only by the
    system check (which no WSGI server runs): ``"the key"`` for ``["the key"]`` made
    one key of each character, and the admin encrypted secrets with the key ``"t"``."""
    try:
        keys = conf.get("SECRET_KEYS")
    except ImproperlyConfigured:  # not a list: said below, as the callers expect it
        keys = None
    if not isinstance(keys, list | tuple) or any(
        not isinstance(key, str) or len(key) < MIN_KEY_LENGTH for key in keys
    ):
        raise SecretKeysInvalid(
            f"PGJOBS['SECRET_KEYS'] must be a list of strings of at least {MIN_KEY_LENGTH} "
            "characters (check pgjobs.E012); nothing was encrypted or decrypted. Make one "
            "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if keys:
        return list(keys)
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


@functools.lru_cache(maxsize=16)
def _fernet_key(material: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_PURPOSE).derive(
        material.encode()
    )
    return base64.urlsafe_b64encode(derived)


def _cipher() -> MultiFernet:
    from cryptography.fernet import Fernet, MultiFernet

    return MultiFernet([Fernet(_fernet_key(key)) for key in configured_keys()])


def encrypt(values: dict[str, str]) -> str:
    """Encrypt a dict of secrets with the current key; an empty dict stores nothing."""
    if not values:
        return ""
    plain = json.dumps(values, separators=(",", ":"), sort_keys=True).encode()
    return _cipher().encrypt(plain).decode()


def decrypt(token: str, owner: str = "connector") -> dict[str, Any]:
    if not token:
        return {}
    from cryptography.fernet import InvalidToken

    try:
        plain = _cipher().decrypt(token.encode())
    except InvalidToken:
        raise SecretsUnreadable(
            f"{owner}: its secrets can't be decrypted with any key in PGJOBS['SECRET_KEYS'] "
            f"(or SECRET_KEY and SECRET_KEY_FALLBACKS). {unreadable_advice(token)}"
        ) from None
    return _secrets_in(plain, owner)


def _secrets_in(plain: bytes, owner: str) -> dict[str, Any]:
    """The JSON object of secrets ``plain`` holds, as ``encrypt`` writes it. Anything
    else (a token made by hand, or by another program, with the key) came out as it
    was: a job of the connector failed with AttributeError, JSONDecodeError or
    RecursionError, and a secret typed in the admin was a 500. What is said never
    quotes ``plain``: it is the secrets."""
    try:
        values = json.loads(plain)
    except (ValueError, RecursionError):  # no UTF-8 or JSON, an integer of 5,000 digits
        values = None
    if not isinstance(values, dict):
        raise SecretsUnreadable(
            f"{owner}: its secrets decrypt to no JSON object of secrets (were they "
            "encrypted by hand, or by another program?): enter the secrets again."
        )
    return values


#: What to do about secrets no configured key decrypts, in general.
KEY_REMOVED = (
    "Was the key that encrypted them removed before `manage.py rotate_connector_secrets` "
    "ran? Put it back, or enter the secrets again."
)

#: ... and when they were saved before SECRET_KEYS was set.
SAVED_BEFORE_SECRET_KEYS = (
    "They were encrypted before PGJOBS['SECRET_KEYS'] was set, with the key derived from "
    "SECRET_KEY: list SECRET_KEY after your key (PGJOBS['SECRET_KEYS'] = [your_key, "
    "SECRET_KEY]), run `manage.py rotate_connector_secrets`, then remove it."
)


#: ... and when the stored token is no whole token: no key could ever decrypt it.
DAMAGED = (
    "Their stored token is damaged (cut short or altered: it is no whole encrypted "
    "token), so no key can decrypt it: enter the secrets again."
)

#: Bytes of a Fernet token around its ciphertext: version, time, IV; then the HMAC.
_FERNET_HEAD, _FERNET_HMAC = 1 + 8 + 16, 32


def is_damaged(token: str) -> bool:
    """Whether ``token`` is no whole Fernet token (URL-safe base64 of version 0x80, the
    time, the IV, a ciphertext of 16-byte blocks and the HMAC): cut short or altered
    by SQL, not encrypted with a key since removed (which looks like an altered token
    of the right shape: only the HMAC tells, and it can't tell which)."""
    try:
        data = base64.b64decode(token, altchars=b"-_", validate=True)
    except ValueError:  # binascii.Error; a character that is not ASCII
        return True
    blocks = len(data) - _FERNET_HEAD - _FERNET_HMAC
    return blocks < 16 or blocks % 16 != 0 or data[0] != 0x80


def unreadable_advice(token: str) -> str:
    """What to do about ``token``, which no configured key decrypts. A project that set
    SECRET_KEYS after saving secrets without it needs SECRET_KEY listed (its derived key
    is that of the same text there), and "put the key back" named none it knew of; a
    damaged token (``is_damaged``) needs no key put back, but the secrets entered again."""
    if token and is_damaged(token):
        return DAMAGED
    if not token or not conf.get("SECRET_KEYS"):
        return KEY_REMOVED
    from cryptography.fernet import Fernet, InvalidToken, MultiFernet

    try:
        django_keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
        MultiFernet([Fernet(_fernet_key(key)) for key in django_keys]).decrypt(token.encode())
    except (InvalidToken, ImproperlyConfigured, TypeError, AttributeError, ValueError):
        return KEY_REMOVED
    return SAVED_BEFORE_SECRET_KEYS


def rotate(token: str) -> str:
    """Re-encrypt with the current (first) key; the plaintext is never returned."""
    if not token:
        return token
    from cryptography.fernet import InvalidToken

    try:
        return _cipher().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretsUnreadable(
            f"secrets can't be decrypted with any configured key. {unreadable_advice(token)}"
        ) from None


def mask(values: dict[str, Any]) -> dict[str, str]:
    """What may be shown of secrets: their names only."""
    return dict.fromkeys(sorted(values), "********")
