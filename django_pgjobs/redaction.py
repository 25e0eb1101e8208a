"""Masking secrets, and what is derived from them, in text before it is stored, logged or shown.

A server that echoes a request back does not echo the password: it echoes
``Authorization: Basic <base64 of "user:password">``, or the password
URL-encoded in a query string, or escaped in JSON. So a ``Redactor`` masks each
secret in every form it is likely to travel in:

- as it is, in lower and in upper case (a server's message shouting it, a key
  compared without case and echoed so), and escaped as text escapes it: in a JSON
  string as Python writes it (``\\u00e9`` or not), as Go does (``\\u0026`` for
  ``&``, ``\\u003c`` for ``<``), as PHP does (``\\/`` for ``/``), a JSON string
  inside another, HTML (``&amp;``), and Python's ``repr`` and ``ascii`` of it and of
  its UTF-8 bytes (``b'\\xc3\\xa9'``, as an exception message quotes an answer);
- URL-encoded, once or twice (``%2F`` and ``%2f``, ``+`` or ``%20`` for a space;
  ``%252F``: a URL inside another URL's query string);
- each of the escaped forms above (a JSON document holding the secret, base64-encoded
  whole) in base64 and URL-safe base64, wherever it sits in the encoded text. The
  base64 of ``"user:" + secret`` encodes the secret differently depending on
  how many bytes come before it (0, 1 or 2 past a multiple of three), so each
  of the three alignments is masked: the characters that depend on the secret
  alone;
- each of the escaped forms in hex, lower or upper case (a byte dump, ``bytes.hex()``),
  and the secret's bytes in hex apart (``bytes.hex(" ")``, a ``hexdump -C`` line);
- in a byte dump (``hexdump -C``, ``xxd``) cut across its lines, in its hex and its
  text column: the dump's lines read back into bytes (``dump_line``) and each form
  found in them masked on each line it runs over (``Redactor._masked_in_dumps``);
- as a number: a secret of digits alone only where no digit adjoins it
  (``numbers_of``), and in a JSON-like value as a number equal to it;
- URL-encoded as any form encoder writes it (``form_pattern``), for a secret too long
  to be masked character by character;
- any of these split over lines (``LINE_BREAK``): base64 wrapped at 76 columns;
- each character as it is or escaped on its own, as encoders that escape some
  characters and not others write it (``character_pattern``): .NET's JSON
  (``\\u002B`` for ``+``), Jinja2's and Go's HTML (``&#39;``), PHP's (``&#039;``),
  JavaScript's ``encodeURIComponent`` (``!*'()`` kept), Java's ``URLEncoder``
  (``~`` as ``%7E``).

A text cut to an excerpt may cut a secret in two: ``Redactor.head`` and
``Redactor.tail`` mask before they cut, so no part of one is left at the cut.

``mask_credentials`` also masks the value of every ``Basic`` credential (base64
of ``user:password``) and ``Bearer`` token in a text, the password of every
URL's ``user:password@``, the path of a webhook's URL that is its key (Slack's:
``KEYED_PATHS``) and the value of every query parameter named as a credential
(``?access_token=``), whoever's they are: error messages get it whether
or not a connector was involved. A name is a credential's by one rule,
``names_a_credential``, for a query parameter masked and for a header or parameter
refused in a connector's plain config and masked in what its call said.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import html
import itertools
import json
import re
import string
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

REDACTED = "********"
#: Shorter secrets are not masked: "abc" would mask every word that contains it.
MIN_SECRET_LENGTH = 4
#: Encoded fragments shorter than this are not masked for the same reason.
MIN_FRAGMENT_LENGTH = 4
#: Room past a cut for a credential ``mask_credentials`` masks (a Bearer token, a URL
#: with its password) to lie whole within what is masked before the cut.
CREDENTIAL_REACH = 512

#: Where a scheme's name starts: no letter or digit before it, or a quote JSON escaped
#: as .NET and Go write it (``\\u0022Basic``, where ``\\b`` finds no boundary).
_START = r"(?:(?<![A-Za-z0-9_])|(?<=\\u0022)|(?<=\\u0027))"
#: A "+" or "/" of base64 as .NET's JSON (``\\u002B``), a URL (``%2B``) or Go's HTML
#: templates (``&#43;``) escape it.
_ESCAPED_B64 = r"\\u002[bBfF]|%2[bBfF]|&#(?:43|47|x2[bBfF]);"
_BASIC = re.compile(rf"{_START}(Basic)(\s+)((?:[A-Za-z0-9+/_-]|{_ESCAPED_B64}){{4,}}={{0,2}})")
_BEARER = re.compile(rf"{_START}(Bearer)(\s+)((?:[A-Za-z0-9._~+/-]|{_ESCAPED_B64}){{8,}}=*)")
#: The password of a URL's ``user:password@``, up to the last ``@`` of the authority:
#: one typed into a DSN unquoted ("p@ss") is masked whole. A scheme is read for at
#: most 64 characters: tried from every letter of a long run ("a.a.a..." in an error
#: naming a URL), each try read to the run's end, and 200 KB took minutes.
_URL_PASSWORD = re.compile(
    r"""([A-Za-z][A-Za-z0-9+.-]{0,63}:\\?/\\?/[^\s/?#:@'"]*:)[^\s/?#'"]+(?=@)"""
)
#: A URL's query parameter's name (``?name=``, ``&``, ``;``), up to the next separator:
#: each is read once. Matched with its value and a credential's words in one pattern,
#: a run of those words ("?keykeykey...") was read again from each (24 KB: 0.5 s, 1 MB:
#: minutes), and read on past separators, each ``;`` of minified CSS read the rest of
#: it (40 KB: 80 s).
_QUERY_NAME = re.compile(r"""(?:[?&;]|\\u0026)([^=&#?;\s'"\\]*)=""")
#: A parameter's value: masked whole if its name is a credential's. Up to an "&" or
#: a quote, also as Go's and .NET's JSON escape them (``\\u0026``, ``\\u0022``): a
#: URL they echo separates its parameters so.
_QUERY_VALUE = re.compile(r"""(?:[^&#\s'"\\]|\\(?!u00(?:26|22|27)))+""")
#: The words that make a name a credential's (``access_token``, ``apiKey``,
#: ``X-Amz-Signature``, ``X-Hub-Signature``, ``sessionid``): those Django's error
#: reports hide settings by, and a few more. One list for masking and for refusing.
CREDENTIAL_WORDS = (
    "auth", "token", "key", "secret", "pass", "pwd", "signature", "sig", "credential",
    "session", "cookie", "jwt",
)  # fmt: skip
#: A name's words: runs of letters and digits, split where the case changes too
#: (``apiKey``: api, Key; ``APIKey``: API, Key).
_NAME_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z0-9]+(?![a-z])")
#: Words that make a credential's name as the start of a word (``Authorization``,
#: ``sessionid``): "obsession" names none.
_CREDENTIAL_PREFIXES = ("auth", "session")
#: Words that make a credential's name wherever they stand in a word (``passwd``,
#: ``userpassword``, ``mytoken``, ``webhooksecretvalue``, ``JSESSIONID``,
#: ``PHPSESSID``): no ordinary word holds one. "pass", "key", "auth", "sig" and
#: "session" do only whole or in a compound, or "bypass", "monkey", "author" and
#: "obsession" would.
_CREDENTIAL_PARTS = (
    "passw", "passphrase", "pwd", "token", "secret", "signature", "credential", "cookie",
    "jwt", "apikey", "authoriz", "authoris", "sessionid", "sessid",
)  # fmt: skip
#: Names with a credential's word that carry none, their words run together in lower
#: case: an idempotency key only tells requests apart (and is one per request).
_NOT_CREDENTIALS = ("idempotencykey", "xidempotencykey")
#: Words that start with "auth" and carry none: a thing's author (``X-Author``,
#: ``X-Authored-By``, ``Authority``); "authoriz" and "authoris" do.
_AUTHORSHIP = re.compile("author(?!i[sz])")
#: A word that starts as a credential's does and names an identity: who a proxy
#: authenticated (``X-Authenticated-User``), not how.
_IDENTITY_WORDS = ("authenticated",)
#: Words after "session" that name where a load balancer pins a session
#: (``X-Session-Affinity``), not the session's id: "session" alone (``X-Session``), or
#: before any other word (``X-Session-Id``), still names a credential.
_SESSION_HINTS = ("affinity",)
#: What comes before a credential's word in a compound that names one (``apikey``,
#: ``accesstoken``, ``clientsecret``, ``oauth``): any ending in one made ``X-Monkey``,
#: ``X-Hockey-Team`` and ``X-Concession-Id`` credentials' names.
_COMPOUND_STARTS = (
    "api", "access", "secret", "private", "client", "master", "app", "consumer", "refresh",
    "bearer", "id", "csrf", "xsrf", "o", "pass", "sign", "signing", "hmac", "shared",
    "license", "subscription", "webhook", "security", "service", "user", "admin", "jwt",
    "sas", "session", "auth", "hub", "request", "upload", "download", "encryption",
    "basic", "proxy", "priv",
)  # fmt: skip
_COMPOUNDS = tuple(
    start + word for start in _COMPOUND_STARTS for word in CREDENTIAL_WORDS if word != "pass"
)
#: Names ending in "code" that are credentials', its words run together: ``code`` alone
#: is Azure Functions' function key (``?code=``) and OAuth's authorization code, where
#: ``country_code``, ``postcode`` and ``barcode`` are no credentials.
_CODE_NAMES = ("access", "pass", "secret", "auth", "verification", "security")


def _names_a_code(words: list[str]) -> bool:
    """Whether a name's words, run together, are ``code`` or one of _CODE_NAMES's."""
    joined = "".join(word.lower().rstrip("0123456789") for word in words)
    return joined == "code" or joined.endswith(tuple(f"{start}code" for start in _CODE_NAMES))


def _names_no_secret(word: str, following: str) -> bool:
    """Whether a name's ``word`` (lower case), before ``following`` (its next word, or
    ""), starts as a credential's does and names none: an identity, a session's routing
    hint (``_IDENTITY_WORDS``, ``_SESSION_HINTS``). The name's other words still count."""
    if word in _IDENTITY_WORDS:
        return True
    if word == "session":
        return following in _SESSION_HINTS
    return word.startswith("session") and word.removeprefix("session") in _SESSION_HINTS


def names_a_credential(name: str) -> bool:
    """Whether a header's or a query parameter's ``name`` names a credential: one of
    its words is one of CREDENTIAL_WORDS, or a compound ending in one after one of
    _COMPOUND_STARTS (``apikey``, ``accesstoken``, ``oauth``, plurals too, a number
    after it), or holds one of _CREDENTIAL_PARTS, or starts with one of
    _CREDENTIAL_PREFIXES (an author's word, an identity, a session's hint aside), or
    is ``code`` (whole, or after one of _CODE_NAMES). The one rule for refusing a name
    in a plain config and for masking its value (a logged URL's query, what a call
    sent): ``api-version``, ``X-GitHub-Api-Version``, ``X-Design``,
    ``X-Cache-Bypass``, ``X-Monkey``, ``X-Author``, ``X-Authenticated-User``,
    ``X-Session-Affinity``, ``Idempotency-Key`` and ``country_code`` are no
    credentials' names."""
    words = _NAME_WORDS.findall(name)
    if _names_a_code(words):
        return True
    if "".join(words).lower() in _NOT_CREDENTIALS:
        return False
    # "Key2", "token1": a second key is one.
    lowered = [word.lower().rstrip("0123456789") for word in words]
    for word, following in itertools.pairwise([*lowered, ""]):
        if _names_no_secret(word, following):
            continue
        singular = word[:-1] if word.endswith("s") and not word.endswith("ss") else word
        if word == "pass" or any(part in word for part in _CREDENTIAL_PARTS):
            return True
        if word.startswith(_CREDENTIAL_PREFIXES) and not _AUTHORSHIP.match(word):
            return True
        if singular in CREDENTIAL_WORDS or singular.endswith(_COMPOUNDS):
            return True
    return False


#: Services whose webhook URLs carry their key in the path, as their documentation has
#: them copied: (name, host, path). Refused in an http connector's plain ``url``; the
#: path of each is masked in any text (``mask_credentials``).
KEYED_PATHS = (
    ("Slack", r"hooks\.slack(-gov)?\.com", r"/."),
    ("Discord", r"((ptb|canary)\.)?discord(app)?\.com", r"/api/(v\d+/)?webhooks/."),
    ("Telegram bot", r"api\.telegram\.org", r"/bot."),
    ("Microsoft Teams", r"[\w-]+\.webhook\.office\.com|outlook\.office(365)?\.com", r"/webhook"),
    ("Zapier", r"hooks\.zapier\.com", r"/hooks/."),
)
_KEYED_PATHS = tuple(
    (name, re.compile(host, re.IGNORECASE), re.compile(path)) for name, host, path in KEYED_PATHS
)
#: A URL on one of KEYED_PATHS' hosts: its origin, and its path up to a space or a quote.
_KEYED_URL = re.compile(
    r"(?P<origin>https?:\\?/\\?/(?:" + "|".join(host for _, host, _ in KEYED_PATHS) + r")(?::\d+)?)"
    r"""(?P<path>\\?/[^\s?#'"<>]*)""",
    re.IGNORECASE,
)


def keyed_path_service(host: str, path: str) -> str | None:
    """The name of the service (``KEYED_PATHS``) whose webhook URL's key is ``path``."""
    for service, host_pattern, path_pattern in _KEYED_PATHS:
        if host_pattern.fullmatch(host) and path_pattern.match(path):
            return service
    return None


def _mask_keyed_path(found: re.Match[str]) -> str:
    origin, path = found["origin"], found["path"]
    host = origin.replace("\\/", "/").split("://", 1)[1].rsplit(":", 1)[0]
    slash = "\\/" if path.startswith("\\/") else "/"  # as PHP's JSON escapes it, or not
    service = keyed_path_service(host, path.replace("\\/", "/"))
    return f"{origin}{slash}{REDACTED}" if service else found[0]


def _mask_query_credentials(text: str) -> str:
    """``text`` with the value of each query parameter named as a credential masked."""
    kept, at = [], 0
    for name in _QUERY_NAME.finditer(text):
        if name.start() < at:
            continue  # inside a value masked already
        if not names_a_credential(name[1]):
            continue  # no credential's name (the same rule as a header's)
        value = _QUERY_VALUE.match(text, name.end())
        if value is not None:
            kept += [text[at : name.end()], REDACTED]
            at = value.end()
    return "".join([*kept, text[at:]])


def mask_credentials(text: str) -> str:
    """``text`` with the value of each Basic credential and Bearer token masked, the
    password of each URL that carries one (a DSN quoted by libpq, a webhook's URL), the
    path of a webhook's URL that is its key (``KEYED_PATHS``: Slack's, Discord's), and
    the value of each query parameter named as a credential (an HTTP library's error
    naming the URL it called)."""
    if "://" in text or ":\\/\\/" in text:  # ":\/\/": PHP writes "/" as "\/" in JSON
        text = _URL_PASSWORD.sub(lambda found: f"{found[1]}{REDACTED}", text)
        text = _KEYED_URL.sub(_mask_keyed_path, text)
    if "=" in text:
        text = _mask_query_credentials(text)
    if "Basic" not in text and "Bearer" not in text:
        return text
    text = _BASIC.sub(_mask_basic, text)
    return _BEARER.sub(lambda found: f"{found[1]}{found[2]}{REDACTED}", text)


def _base64_sign(escape: re.Match[str]) -> str:
    """The "+" or "/" an ``_ESCAPED_B64`` escape stands for."""
    return "+" if escape[0].rstrip(";")[-2:].lower() in ("2b", "43") else "/"


def _mask_basic(found: re.Match[str]) -> str:
    """Mask a Basic value that is base64 of ``user:password`` ("Basic setup" stays)."""
    value = re.sub(_ESCAPED_B64, _base64_sign, found[3])
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_")
    except (binascii.Error, ValueError):
        return found[0]
    if b":" not in decoded:
        return found[0]
    return f"{found[1]}{found[2]}{REDACTED}"


#: An HTML character reference's number may carry leading zeros (PHP's ``&#039;``).
_ZEROS = "0{0,4}"
#: The most characters ``character_pattern`` matches for one character: ``%25F0``
#: four times over (an astral character URL-encoded twice), an HTML reference.
CHARACTER_REACH = 24
#: The longest secret ``character_pattern`` is made of (passwords, tokens, API keys);
#: longer ones are masked in the whole forms of ``encoded_forms`` alone.
CHARACTER_WISE_MAX = 1_000


def character_pattern(secret: str) -> str:
    """A pattern of ``secret`` whose every character is itself or escaped on its own: a
    JSON ``\\uXXXX`` (a surrogate pair past the BMP) or short escape, its UTF-8 bytes
    URL-encoded once or twice, an HTML character reference by number or name, in either
    case. Encoders escape different sets of characters (.NET's JSON ``+`` and ``'``,
    JavaScript's ``encodeURIComponent`` none of ``!*'()``, Java's ``URLEncoder`` ``~``,
    a shell's quoting ``$`` and ``'``), and no list of whole forms holds every mix; a
    text is masked only if it holds every character of the secret, in order."""
    return "".join(_character(ch) for ch in secret)


#: What every application/x-www-form-urlencoded encoder writes as it is.
_FORM_KEPT = frozenset(string.ascii_letters + string.digits + "-._")


def form_pattern(secret: str) -> str:
    """A pattern of ``secret`` URL-encoded as form encoders write it, once or twice:
    a space as ``+`` (``%2B`` twice), each character other than ``_FORM_KEPT`` as it
    is or as its UTF-8 bytes escaped. Encoders disagree on ``*~!'()`` (WHATWG's and
    Java's keep ``*``, PHP's none, Go's ``~``, .NET's ``!*()``, jQuery's all of them);
    for a secret longer than CHARACTER_WISE_MAX, whose character-wise pattern would
    cost too much to compile: a key or a certificate posted in a form."""
    parts = []
    for ch in secret:
        if ch in _FORM_KEPT:
            parts.append(ch)
        elif ch == " ":
            parts.append(r"(?:\+|(?i:%20|%2b|%2520))")
        else:
            utf8 = ch.encode("utf-8", "surrogatepass")
            once = "".join(f"%{byte:02x}" for byte in utf8)
            twice = "".join(f"%25{byte:02x}" for byte in utf8)
            parts.append(f"(?:{re.escape(ch)}|(?i:{once}|{twice}))")
    return "".join(parts)


def hex_pattern(secret: str) -> str:
    """A pattern of the secret's UTF-8 bytes in hex, in either case, each pair apart or
    not: ``bytes.hex(" ")``, Go's ``% x``, colons, the hex column of ``hexdump -C``
    (two spaces after the eighth byte)."""
    pairs = (f"{byte:02x}" for byte in secret.encode("utf-8", "surrogatepass"))
    return f"(?i:{'[ :-]{0,2}'.join(pairs)})"


def _character(ch: str) -> str:
    code = ord(ch)
    units = [code] if code < 0x10000 else [0xD800 + ((code - 0x10000) >> 10),
                                           0xDC00 + ((code - 0x10000) & 0x3FF)]  # fmt: skip
    utf8 = ch.encode("utf-8", "surrogatepass")
    escaped = [
        "".join(f"\\\\u{unit:04x}" for unit in units),
        "".join(f"%{byte:02x}" for byte in utf8),
        "".join(f"%25{byte:02x}" for byte in utf8),
        f"&#{_ZEROS}{code};",
        f"&#x{_ZEROS}{code:x};",
    ]
    if ch == " ":  # a form's space, and that form's "+" URL-encoded (a form in a form)
        escaped += [r"\+", "%2b"]
    if short := _JSON_SHORT.get(ch):
        escaped.append(re.escape(short))
    if name := _HTML_NAMES.get(ch):
        escaped.append(f"&{name};")
    if ch in _PUNCTUATION:  # a shell's \$ (bash's declare -p, printf %q), repr's \'
        escaped.append(re.escape("\\" + ch))
    if ch == "'":  # closed, then quoted, in a shell's single-quoted word (set, shlex.quote)
        escaped += [re.escape("'\\''"), re.escape("'\"'\"'")]
    # Hex digits and names in either case; the character itself as it is, tried last:
    # a secret ending in a backslash, escaped as two, is masked with both of them.
    return f"(?:(?i:{'|'.join(escaped)})|{re.escape(ch)})"


#: The characters JSON escapes with a backslash and a letter (or themselves).
_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: What a backslash may escape: ASCII punctuation and the space.
_PUNCTUATION = frozenset(string.punctuation + " ")
#: The characters HTML escapes by name in what servers write (``&amp;``, ``&quot;``).
_HTML_NAMES = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}


def escaped_forms(secret: str) -> set[str]:
    """The secret as it is and as text escapes it (module docstring)."""
    forms = {secret, secret.lower(), secret.upper(), html.escape(secret)}
    forms.add(html.escape(secret, quote=False))
    forms |= {repr(secret)[1:-1], ascii(secret)[1:-1]}
    forms.add(repr(secret.encode("utf-8", "surrogatepass"))[2:-1])
    for ascii_only in (True, False):
        in_json = json.dumps(secret, ensure_ascii=ascii_only)[1:-1]
        forms |= {in_json, in_json.replace("/", "\\/"), json.dumps(in_json)[1:-1]}
        forms.add(_GO_ESCAPES.sub(lambda found: f"\\u{ord(found[0]):04x}", in_json))
    return forms


#: What Go's encoding/json (and other encoders meant for HTML pages) escape as \uXXXX.
_GO_ESCAPES = re.compile("[<>&\u2028\u2029]")


def url_forms(secret: str) -> set[str]:
    """The secret URL-encoded once and twice, hex digits in either case."""
    forms = set()
    for safe in ("", "/"):
        for quoted in (urllib.parse.quote(secret, safe), urllib.parse.quote_plus(secret, safe)):
            for form in (quoted, urllib.parse.quote(quoted, safe)):
                forms.add(form)
                forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), form))
    return forms


def binary_forms(text: str) -> set[str]:
    """``text`` (UTF-8) in base64 at each alignment, and in hex."""
    raw = text.encode("utf-8", "surrogatepass")
    forms = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        total = offset + len(raw)
        # Skip the characters that also carry bits of the bytes before the secret,
        # and those that carry bits of the bytes after it.
        start = (0, 2, 3)[offset]
        end = 4 * (total // 3) + total % 3
        fragment = encoded[start:end]
        if len(fragment) >= MIN_FRAGMENT_LENGTH:
            forms.add(fragment)
            forms.add(fragment.replace("+", "-").replace("/", "_"))
    # Hex is byte-aligned: the secret's digits are the same wherever it sits.
    return forms | {raw.hex(), raw.hex().upper()}


def encoded_forms(secret: str) -> set[str]:
    """The secret and the forms it travels in (module docstring)."""
    escaped = escaped_forms(secret)
    forms = escaped | url_forms(secret)
    for form in escaped:
        forms |= binary_forms(form)
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


#: Where a long value is wrapped: a line break (or a JSON string's ``\\n``) and the
#: next line's indent. ``base64`` and MIME wrap base64 at 76 columns, headers are
#: folded, log lines and terminals wrap.
LINE_BREAK = re.compile(r"(?:\r?\n|(?:\\r)?\\n)[ \t]*")


def masked_across_lines(pattern: re.Pattern[str], text: str) -> str:
    """``text`` with each match of ``pattern`` that only its line breaks (``LINE_BREAK``)
    interrupt masked, the line breaks inside it too."""
    lines, starts = [], []  # each line's text, and where it starts in text
    at = 0
    for line_break in LINE_BREAK.finditer(text):
        lines.append(text[at : line_break.start()])
        starts.append(at)
        at = line_break.end()
    lines.append(text[at:])
    starts.append(at)
    joined_starts = list(itertools.accumulate((len(line) for line in lines[:-1]), initial=0))

    def in_text(index: int) -> int:
        """Where the character at ``index`` of the joined lines is in ``text``."""
        line = bisect.bisect_right(joined_starts, index) - 1
        return starts[line] + index - joined_starts[line]

    masked, at = [], 0
    for found in pattern.finditer("".join(lines)):
        start, end = in_text(found.start()), in_text(found.end() - 1) + 1
        masked += [text[at:start], REDACTED]
        at = end
    return "".join(masked) + text[at:]


#: A secret that is a number (a PIN, a numeric API secret): ASCII digits alone.
_NUMBER = re.compile(r"[0-9]+")


def numbers_of(secret: str) -> list[str]:
    """The numbers ``secret`` is, as text writes them: itself if it is digits alone,
    and without its leading zeros (a JSON parser's number of "0084731920551"), each
    if at least MIN_SECRET_LENGTH digits long. Masked only where no digit adjoins them
    (``_bounded``): "1847319205512" is another number, not "84731920551" in disguise.
    A number's other forms (its hex, its base64) are masked anywhere, as any secret's."""
    if not _NUMBER.fullmatch(secret):
        return []
    return [number for number in {secret, secret.lstrip("0")} if len(number) >= MIN_SECRET_LENGTH]


def _bounded(pattern: str) -> str:
    """``pattern`` where no digit adjoins it, nor is it a number's fraction ("1.8473")."""
    return f"(?<![0-9])(?<![0-9][.,])(?:{pattern})(?![0-9])"


#: Where a line of a byte dump may start: an offset, then bytes in hex (``hexdump -C``:
#: "00000010  70 40", ``xxd``: "00000010: 7040"), at the text's start or a line's.
_DUMP_START = re.compile(r"(?m)(?:^|(?<=\\n))[0-9a-fA-F]{6,16}:? {1,2}[0-9a-fA-F]{2}")
#: A line's break, as it is or in a JSON string.
_LINE_END = re.compile(r"\r?\n|(?:\\r)?\\n")
_DUMP_OFFSET = re.compile(r"[0-9a-fA-F]{6,16}:? ")
_DUMP_BYTES = re.compile(r" {0,2}((?:[0-9a-fA-F]{2}){1,4})(?![0-9a-fA-F])")
#: The longest line of a dump read: 16 bytes a line, in either tool's layout, escaped.
_DUMP_WIDTH = 200


def _shown_byte(byte: int, in_json: bool) -> str:
    """A byte as a dump's text column shows it (a dot unless printable ASCII), and as
    a JSON string holding the dump escapes that."""
    ch = chr(byte) if 32 <= byte < 127 else "."
    return ("\\" + ch if ch in '"\\' else ch) if in_json else ch


def dump_line(line: str) -> tuple[bytes, list[tuple[int, int]], list[tuple[int, int]]] | None:
    """A line of ``hexdump -C`` or ``xxd`` (any grouping) read: its bytes, where each
    byte's hex digits are in the line, and where its character of the text column is;
    None for any other line. A line is a dump's only if its text column shows exactly
    its bytes, so no other text is read as one."""
    offset = _DUMP_OFFSET.match(line)
    if offset is None or len(line) > _DUMP_WIDTH:
        return None
    data, hexes, at = bytearray(), [], offset.end()
    while (group := _DUMP_BYTES.match(line, at)) is not None and len(data) < 16:
        start = group.start(1)
        for index in range(0, len(group[1]), 2):
            data.append(int(group[1][index : index + 2], 16))
            hexes.append((start + index, start + index + 2))
        at = group.end()
        rest = line[at:]
        for in_json, bars in itertools.product((False, True), ("", "|")):  # "|": hexdump -C
            shown = [_shown_byte(byte, in_json) for byte in data]
            column = bars + "".join(shown) + bars
            if not (rest.endswith(column) and len(rest) > len(column)):
                continue
            if rest[: len(rest) - len(column)].strip(" "):
                continue
            first = len(line) - len(column) + len(bars)
            ends = list(itertools.accumulate(map(len, shown), initial=first))
            return bytes(data), hexes, list(itertools.pairwise(ends))
    return None


def secret_texts(secrets: Iterable[Any]) -> Iterator[str]:
    """The texts that stand for ``secrets``: a string as it is, a number as it is
    written, and each of those a JSON secret holds (a service account's dict, a list of
    keys), however deep: masked as its Python repr, the strings inside it were not
    masked at all. None and booleans stand for nothing: a bit is no secret, and masking
    "True" masked every "true" of a job's output."""
    pending = list(secrets)
    while pending:  # a loop, not recursion: JSON may nest deeper than Python recurses
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list | tuple):
            pending.extend(value)
        elif value is not None and not isinstance(value, bool):
            yield str(value)


class Redactor:
    """Masks a set of secret values, in every form of ``encoded_forms``, and
    credentials (``mask_credentials``). Falsy when it has no secret to mask."""

    def __init__(self, secrets: Iterable[Any] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        #: The numeric secrets as numbers: masked in a value (``value``) as numbers.
        self._numbers: set[int] = set()
        #: The most characters one masked form may span (``head``, ``tail``).
        self.reach = CREDENTIAL_REACH
        self.add(secrets)

    def add(self, secrets: Iterable[Any]) -> None:
        """Mask these too."""
        new = {text for text in secret_texts(secrets) if len(text) >= MIN_SECRET_LENGTH}
        if new - self._secrets:
            self._secrets |= new
            forms = set().union(*(encoded_forms(secret) for secret in self._secrets))
            # Longest first: a secret that contains another is masked whole. Each
            # character escaped on its own first, then the whole forms (base64 of the
            # escaped ones, a JSON string in another) that no character-wise match holds.
            secrets_first = sorted(self._secrets, key=len, reverse=True)
            # Not for a key or a certificate: compiled, such a pattern costs a second
            # per 10,000 characters, and nobody echoes one escaped character-wise.
            wise = [secret for secret in secrets_first if len(secret) <= CHARACTER_WISE_MAX]
            # A number is masked where no digit adjoins it, in each of its forms that is
            # digits alone (the secret, its URL-encoding...); its hex and base64 anywhere.
            numbers = {number for secret in self._secrets for number in numbers_of(secret)}
            # As numbers, those a number's digits write ("0007" is no 7); int() reads
            # no more than 4,300 digits.
            self._numbers = {
                int(number) for number in numbers if number[0] != "0" and len(number) <= 4_000
            }
            forms |= numbers
            alternatives = [
                _bounded(character_pattern(secret)) if secret in numbers
                else character_pattern(secret)
                for secret in wise
            ]  # fmt: skip
            alternatives += [hex_pattern(secret) for secret in wise]
            alternatives += [form_pattern(s) for s in secrets_first if len(s) > CHARACTER_WISE_MAX]
            # Its base64 (an echoed Basic header) with "+" and "/" escaped on their own.
            alternatives += [
                character_pattern(form)
                for secret in wise
                for form in binary_forms(secret)
                if "+" in form or "/" in form
            ]
            alternatives += [
                _bounded(re.escape(form)) if form in numbers else re.escape(form)
                for form in sorted(forms, key=len, reverse=True)
            ]
            self._pattern = re.compile("|".join(alternatives))
            longest = max(len(wise[0]) * CHARACTER_REACH if wise else 0, *map(len, forms))
            # Split over lines: a break (and its indent) every 76 characters or so.
            self.reach = 2 * longest + CREDENTIAL_REACH

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def text(self, text: str) -> str:
        """``text`` with every form of every secret, and every credential, masked."""
        if self._pattern is not None:
            if _DUMP_START.search(text):
                text = self._masked_in_dumps(text)
            text = self._pattern.sub(REDACTED, text)
            if "\n" in text or "\\n" in text:
                text = masked_across_lines(self._pattern, text)
        return mask_credentials(text)

    def _masked_in_dumps(self, text: str) -> str:
        """``text`` with each secret in a byte dump (``dump_line``: ``hexdump -C``,
        ``xxd``) masked in its hex and its text column: the bytes of the dump's
        consecutive lines are read as one, and each form of a secret found in them is
        masked on every line it runs over. A secret cut at the end of a line (16 bytes)
        was left in both columns: the next line's offset and the text column stood
        between its halves in hex, the hex column between its halves in text."""
        spans: list[tuple[int, int]] = []
        block: list[tuple[int, tuple[bytes, list, list]]] = []
        at = 0
        for end in [*(found.start() for found in _LINE_END.finditer(text)), len(text)]:
            read = dump_line(text[at:end])
            if read is not None:
                block.append((at, read))
            else:
                spans += self._in_dump(block)
                block = []
            found_end = _LINE_END.match(text, end)
            at = found_end.end() if found_end else end
        spans += self._in_dump(block)
        if not spans:
            return text
        kept, at = [], 0
        for start, end in sorted(spans):
            kept += [text[at:start], REDACTED]
            at = end
        return "".join(kept) + text[at:]

    def _in_dump(self, block: list[tuple[int, tuple[bytes, list, list]]]) -> list[tuple[int, int]]:
        """Where, in the text, the forms of secrets in a dump's ``block`` of lines are:
        for each line a secret's bytes run over, their hex and their text column."""
        assert self._pattern is not None
        if not block:
            return []
        data = b"".join(read[0] for _, read in block)
        decoded = data.decode("utf-8", "surrogateescape")
        # Where each character's bytes start: a character is 1 to 4 bytes of UTF-8.
        starts = list(
            itertools.accumulate(
                (len(ch.encode("utf-8", "surrogateescape")) for ch in decoded), initial=0
            )
        )
        masked = bytearray(len(data))
        for found in self._pattern.finditer(decoded):
            masked[starts[found.start()] : starts[found.end()]] = b"\1" * (
                starts[found.end()] - starts[found.start()]
            )
        if not any(masked):
            return []
        spans, first = [], 0
        for line_at, (line_bytes, hexes, shown) in block:
            flags = masked[first : first + len(line_bytes)]
            first += len(line_bytes)
            for byte in range(len(flags)):
                if flags[byte] and (byte == 0 or not flags[byte - 1]):
                    last = byte
                    while last + 1 < len(flags) and flags[last + 1]:
                        last += 1
                    spans.append((line_at + hexes[byte][0], line_at + hexes[last][1]))
                    spans.append((line_at + shown[byte][0], line_at + shown[last][1]))
        return spans

    def head(self, text: str, width: int) -> str:
        """The first ``width`` characters of ``text`` masked: masked before the cut (a
        secret the cut split in two was left at the end, its first part unmasked), on
        enough of ``text`` that what the cut leaves out holds any part of a form."""
        if len(text) <= width:
            return self.text(text)
        end = width + self.reach
        masked = self.text(text[:end])
        # Masks shorten the text: read further until the unmasked end lies past the cut.
        while len(masked) < width + self.reach and end < len(text):
            end += width + self.reach - len(masked)
            masked = self.text(text[:end])
        return masked[:width]

    def tail(self, text: str, width: int) -> str:
        """The last ``width`` characters of ``text`` masked (``head``, from the end)."""
        if len(text) <= width:
            return self.text(text)
        start = len(text) - width - self.reach
        masked = self.text(text[max(start, 0) :])
        while len(masked) < width + self.reach and start > 0:
            start -= width + self.reach - len(masked)
            masked = self.text(text[max(start, 0) :])
        return masked[-width:]

    def value(self, value: Any) -> Any:
        """A JSON-like value (dicts, lists, strings, numbers) with every string masked,
        keys included. Walks without recursion, so any depth is fine."""
        if isinstance(value, str):
            return self.text(value)
        if not isinstance(value, dict | list | tuple):
            return self._number(value)
        root: list[Any] = [None]
        pending: list[tuple[Any, Any, Any]] = [(value, root, 0)]
        while pending:
            item, parent, slot = pending.pop()
            if isinstance(item, str):
                parent[slot] = self.text(item)
            elif isinstance(item, dict):
                copied: dict[Any, Any] = {}
                parent[slot] = copied
                for key, inner in item.items():
                    masked_key = self.text(key) if isinstance(key, str) else key
                    copied[masked_key] = None
                    pending.append((inner, copied, masked_key))
            elif isinstance(item, list | tuple):
                listed: list[Any] = [None] * len(item)
                parent[slot] = listed
                pending.extend((inner, listed, index) for index, inner in enumerate(item))
            else:
                parent[slot] = self._number(item)
        return root[0]

    def _number(self, value: Any) -> Any:
        """``value``, or REDACTED if it is a number that is a numeric secret (a JSON
        number an answer echoed it as, read back as an int or a float)."""
        if (
            self._numbers
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and value in self._numbers  # by value: no str() of a 5,000-digit int
        ):
            return REDACTED
        return value
