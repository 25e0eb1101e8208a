"""A connector's config as the admin shows it: credentials a stored row holds, masked.

The rules refuse credentials in a config being written (``ConnectorKind.validate``,
``write_problems``), yet a row written by SQL, or saved before a rule, holds them: a
URL's password, a header or an environment variable named as a credential, a query
parameter's value. Its change page shows them masked (``REDACTED``); a masked value
posted back as shown keeps the stored one (``restored``), as an empty secrets field
keeps the secrets, so that an edit of another field neither erases it nor saves the
mask in its place.
"""

from __future__ import annotations

import json
from typing import Any

from ..redaction import REDACTED, mask_credentials, names_a_credential


def shown_config(config: Any) -> Any:
    """``config`` with each string's credentials masked (``mask_credentials``: a URL's
    password, a credential query parameter, a Basic or Bearer value), and the value of
    each entry of a nested object (``headers``, ``env``) whose name names a credential;
    of any shape (a row written by SQL). Options' own names (``api_key_header``) are
    no credentials: the top level's entries are judged by their values only. A config
    nested deeper than a walk of it can recurse (written by SQL) is ``TOO_DEEP``."""
    try:
        return _shown(config, nested=False)
    except RecursionError:
        return TOO_DEEP


#: What is shown of a config nested too deep to look for credentials in.
TOO_DEEP = "not shown: nested too deep to look for credentials in; it is kept as stored"


def shown_text(config: Any) -> str:
    """``shown_config(config)`` as indented JSON, for a read-only page."""
    try:
        return json.dumps(shown_config(config), indent=2, ensure_ascii=False)
    except RecursionError:  # within what the walk takes, past what indenting does
        return TOO_DEEP


def _shown(value: Any, nested: bool) -> Any:
    if isinstance(value, str):
        return mask_credentials(value)
    if isinstance(value, list):
        return [_shown(item, True) for item in value]
    if isinstance(value, dict):
        return {name: _entry(name, item, nested) for name, item in value.items()}
    return value


def _entry(name: Any, value: Any, nested: bool) -> Any:
    if nested and isinstance(value, str) and value and names_a_credential(str(name)):
        return REDACTED
    return _shown(value, True)


def restored(posted: Any, stored: Any) -> Any:
    """``posted`` (a config submitted from the page that showed ``shown_config(stored)``)
    with each value left as shown put back as stored: where what was shown differs from
    what is stored (something was masked) and the value posted is what was shown, the
    stored value; an entry or an item edited, added or removed is taken as posted."""
    try:
        return _restored(posted, shown_config(stored), stored)
    except RecursionError:  # posted nested past the stack: refused as it is, later
        return posted


def _restored(posted: Any, shown: Any, stored: Any) -> Any:
    if shown == stored:  # nothing masked here: what was posted is what was meant
        return posted
    if type(posted) is type(shown) and posted == shown:
        return stored
    if isinstance(posted, dict) and isinstance(shown, dict) and isinstance(stored, dict):
        return {
            name: _restored(value, shown[name], stored[name]) if name in stored else value
            for name, value in posted.items()
        }
    if isinstance(posted, list) and isinstance(stored, list) and len(posted) == len(stored):
        return [_restored(*items) for items in zip(posted, shown, stored, strict=True)]
    return posted


def mask_left(posted: Any, stored: Any) -> bool:
    """Whether ``posted`` (``restored`` already) still holds ``REDACTED`` where
    ``stored`` holds none: a value edited around its mask (a URL's ``page=`` changed,
    its ``api_key=********`` left), which is no longer what was shown and can't be put
    back; saved, the mask took the credential's place."""
    return _holds_mask(posted) and not _holds_mask(stored)


def _holds_mask(value: Any) -> bool:
    try:
        return REDACTED in json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # refused later as it is
        return False
