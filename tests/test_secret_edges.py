"""Secrets at the edges of what masking saw: escaped as other languages' servers
escape them (character by character, some characters and not others), and cut
across the end of an excerpt (an HTTP answer's first 500 characters, a command's
kept tail), where masking used to see only part of the secret and left that part."""

from __future__ import annotations

import html
import json
import re
import shlex
import sys
import urllib.parse
from collections.abc import Callable

import pytest

from django_pgjobs.connectors import ConnectorError, get_connector
from django_pgjobs.redaction import REDACTED, Redactor
from tests.factories import ConnectorFactory
from tests.peers import HttpPeer

#: A generated password: base64's "+" and "/", and the punctuation encoders disagree on.
SECRET = "p@ss!w*rd'(x)+k~y\"z/Q9"


def _dotnet_json(text: str) -> str:
    """System.Text.Json's default: HTML-sensitive characters and "+" as \\uXXXX, upper case."""
    escapes = {"\\": "\\\\", "\n": "\\n"}
    return "".join(
        escapes.get(ch) or (f"\\u{ord(ch):04X}" if ch in "<>&'\"+`" or ord(ch) > 126 else ch)
        for ch in text
    )


def _markupsafe(text: str) -> str:
    """Jinja2's (markupsafe) and Go's html.EscapeString: ' as &#39;, " as &#34;."""
    return (
        text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")
        .replace("'", "&#39;").replace('"', "&#34;")
    )  # fmt: skip


def _php_html(text: str) -> str:
    """PHP's htmlspecialchars(ENT_QUOTES): ' as &#039;."""
    return html.escape(text).replace("&#x27;", "&#039;")


ENCODERS: dict[str, Callable[[str], str]] = {
    ".NET System.Text.Json": _dotnet_json,
    "Jinja2 / Go html": _markupsafe,
    "PHP htmlspecialchars": _php_html,
    "JavaScript encodeURIComponent": lambda t: urllib.parse.quote(t, safe="-_.!~*'()"),
    "JavaScript encodeURI": lambda t: urllib.parse.quote(t, safe="-_.!~*'();/?:@&=+$,#"),
    "Java URLEncoder": lambda t: urllib.parse.quote_plus(t, safe="-_.*").replace("~", "%7E"),
    "PHP urlencode": lambda t: urllib.parse.quote_plus(t, safe="-_.").replace("~", "%7E"),
    "Go url.PathEscape": lambda t: urllib.parse.quote(t, safe="-_.~$&+,:;=@"),
    "JSON upper-case escapes": lambda t: json.dumps(t)[1:-1].replace("/", "\\u002F"),
    # A program printing its environment: bash's declare -p / export -p, printf %q, set.
    "bash declare -p": lambda t: re.sub(r'([$"\\`])', r"\\\1", t),
    "bash printf %q": lambda t: re.sub(r"([^\w@%+=:,./-])", r"\\\1", t),
    "bash set": lambda t: t.replace("'", "'\\''"),
    "shlex.quote": lambda t: shlex.quote(t)[1:-1],
}


def _spaced_hex(text: str, separator: str) -> str:
    return text.encode().hex(separator)


def _hexdump_line(text: str) -> str:
    """The hex column of ``hexdump -C``: bytes apart, two spaces after the eighth."""
    pairs = [f"{byte:02x}" for byte in text.encode()[:16]]
    return " ".join(pairs[:8]) + "  " + " ".join(pairs[8:])


ENCODERS.update({
    "bytes.hex(' ')": lambda t: _spaced_hex(t, " "),
    "bytes.hex(':'), upper case": lambda t: _spaced_hex(t, ":").upper(),
    "Go's % x": lambda t: _spaced_hex(t, " "),
})  # fmt: skip


def test_a_secret_in_a_hexdump_line_is_masked():
    sixteen = SECRET[:16]
    line = f"00000000  {_hexdump_line(sixteen)}  |................|"
    assert Redactor([sixteen]).text(line).startswith(f"00000000  {REDACTED}  |")


@pytest.mark.parametrize("encoder", ENCODERS.values(), ids=ENCODERS.keys())
def test_a_secret_escaped_as_other_languages_servers_escape_it_is_masked(encoder):
    echoed = encoder(SECRET)
    assert echoed != SECRET  # not vacuous: each escapes something
    masked = Redactor([SECRET]).text(f"denied: {echoed} (bad key)")
    assert masked == f"denied: {REDACTED} (bad key)"


def test_a_long_secret_is_masked_in_its_whole_forms():
    """Past CHARACTER_WISE_MAX characters (a key, a certificate) no character-wise
    pattern is made: compiled, one cost a second per 10,000 characters, per process."""
    from django_pgjobs.redaction import CHARACTER_WISE_MAX

    long = ("k3y+/" * CHARACTER_WISE_MAX)[: CHARACTER_WISE_MAX * 3]
    redactor = Redactor([long])
    for form in (long, json.dumps(long)[1:-1], urllib.parse.quote(long, safe="")):
        assert redactor.text(f"<{form}>") == f"<{REDACTED}>"


def test_text_that_only_looks_like_an_escaped_secret_is_kept():
    """Each character may come escaped or not, but every one must be there, in order."""
    redactor = Redactor([SECRET])
    for text in (SECRET[:-1], SECRET.replace("+", "-"), _dotnet_json(SECRET)[:-2]):
        assert redactor.text(text) == text


TOKEN = "tok-0123456789abcdefghijklmnopqrstuvwxyz"


def _hook(
    peer: HttpPeer,
    status: int,
    body: str,
    kind: str = "text/plain",
    encoding: str = "utf-8",
) -> None:
    peer.status, peer.answer, peer.content_type = status, body.encode(encoding), kind
    ConnectorFactory(name="hook", config={"url": peer.url}, secrets={"token": TOKEN})


@pytest.mark.parametrize("before", [480, 499, 500 - len(TOKEN) + 1])
def test_a_secret_across_the_end_of_an_error_excerpt_leaves_no_part(db, http_peer, before):
    """The error quotes the answer's first 500 characters: it was cut, then masked, so
    the secret's first 20 characters, cut from the rest, stayed."""
    _hook(http_peer, 401, "x" * before + TOKEN + " echoed")
    with pytest.raises(ConnectorError) as failed:
        get_connector("hook").request({"a": 1})
    message = str(failed.value)
    assert "answered 401" in message
    assert "x" + TOKEN[: 500 - before] not in message, message


def test_a_secret_across_the_end_of_a_calls_kept_body_leaves_no_part(db, http_peer):
    _hook(http_peer, 200, "x" * 9_980 + TOKEN)
    body = get_connector("hook").call({"a": 1})["body"]
    assert body.startswith("x" * 9_980) and TOKEN[:4] not in body, body[-60:]


@pytest.mark.parametrize("after", [10, 1])
def test_a_secret_across_the_start_of_a_commands_kept_tail_leaves_no_part(db, after):
    """A command keeps the tail of its output: cut, then masked, so a secret printed
    just before that tail left its last characters."""
    script = f"import os, sys; sys.stdout.write(os.environ['TOKEN'] + 'y' * {100 - after})"
    ConnectorFactory(
        name="cmd",
        kind="command",
        config={"executable": sys.executable, "args": ["-c", script], "max_output_bytes": 100},
        secrets={"TOKEN": TOKEN},
    )
    result = get_connector("cmd").run()
    assert result.truncated and result.stdout.endswith("y" * (100 - after)), result.stdout
    assert TOKEN[-after:] + "y" not in result.stdout, result.stdout


@pytest.mark.parametrize("before", [1_960, 1_990])
def test_a_secret_across_the_cut_of_an_unstorable_results_repr_leaves_no_part(worker, before):
    """A result that is no JSON (bytes a task returned as a server sent them) is stored
    as its repr, cut to 2,000 characters, and then masked: the secret's first part stayed."""
    from django_pgjobs import Job

    ConnectorFactory(name="hook", secrets={"token": TOKEN})
    job = Job.enqueue(
        "tests.tasks_for_connectors.return_bytes_echoing_a_secret", [before], connector="hook"
    )
    worker.drain()
    job.refresh_from_db()
    shown = job.result["repr"]
    assert shown.startswith("b'xxx") and job.result["unstorable"], job.result
    prefix = TOKEN[: 2_000 - 3 - before - 2]  # after b' and before the "..."
    assert "x" + prefix not in shown, shown[-60:]


@pytest.mark.parametrize(
    "kind, encoding",
    [
        ("text/plain; charset=utf-16", "utf-16"),  # with its byte order mark
        ("text/html; charset=UTF-16LE", "utf-16-le"),
        ("application/json; charset=utf-32", "utf-32"),
        ("text/plain", "utf-16"),  # not said, but its byte order mark says it
        ("text/plain; charset=latin-1", "latin-1"),
    ],
)
def test_a_secret_echoed_in_the_charset_the_answer_declares_is_masked(
    db, http_peer, kind, encoding
):
    """The answer was read as UTF-8 whatever it said: in UTF-16 the secret came out with
    a NUL after each character (stored as \\x00), which no form matched, and was left
    there for anyone to read."""
    _hook(http_peer, 401, f"denied: {TOKEN} é", kind, encoding)
    with pytest.raises(ConnectorError) as failed:
        get_connector("hook").request({"a": 1})
    message = str(failed.value)
    assert f"denied: {REDACTED} é" in message, message


def test_a_secret_a_command_prints_shell_quoted_is_masked(db):
    """``declare -p`` (bash's ``export -p``) writes a variable's value with ``$``, ``"``,
    a backslash and a backquote escaped: a program printing its environment so left a
    secret holding one of them in the job's result."""
    ConnectorFactory(
        name="cmd",
        kind="command",
        config={
            "executable": "bash",
            "args": ["-c", "declare -p TOKEN; printf '%q\\n' \"$TOKEN\""],
        },
        secrets={"TOKEN": SECRET + "$`\\"},
    )
    result = get_connector("cmd").run()
    assert result.stdout.splitlines() == [f'declare -x TOKEN="{REDACTED}"', REDACTED]


def _go_html(text: str) -> str:
    """Go's html/template in HTML text: "+" as &#43;, quotes as &#34; and &#39;."""
    return text.replace("+", "&#43;").replace('"', "&#34;").replace("'", "&#39;")


@pytest.mark.parametrize("password", ["hunter2>>~~secret", "S3cr3t?>?>Pass", "pa\xdf\xdfword>>>"])
@pytest.mark.parametrize("escaped", [_dotnet_json, _go_html], ids=[".NET JSON", "Go HTML"])
def test_a_basic_credential_echoed_as_dotnet_writes_json_is_masked(password, escaped):
    """.NET's JSON writes the quote before "Basic" as \\u0022 (so no word boundary
    was found before it) and each "+" of the base64 as \\u002B: the credential, and
    the base64 of the password in it, were left whole."""
    import base64

    encoded = base64.b64encode(f"someone:{password}".encode()).decode()
    assert "+" in encoded  # not vacuous
    echoed = "denied: " + escaped(json.dumps({"authorization": f"Basic {encoded}"}))
    for redactor in (Redactor([password]), Redactor()):  # a connector's secret, or none
        masked = redactor.text(echoed)
        assert REDACTED in masked, masked
        unescaped = masked.replace("\\u002B", "+").replace("&#43;", "+")
        assert not any(encoded[at : at + 8] in unescaped for at in range(12, len(encoded) - 8))


def test_a_credential_query_parameter_after_an_escaped_ampersand_is_masked():
    """Go's and .NET's JSON write "&" as \\u0026: a URL they echo named its second
    parameter after it, where only "?", "&" and ";" were looked for, and the
    access token stayed."""
    from django_pgjobs.redaction import mask_credentials

    url = "https://api.example.com/v1?page=2&access_token=SEKRIT123&x=1"
    escape = "\\u0026"
    echoed = f"denied: {json.dumps(url)}".replace("&", escape)
    masked = mask_credentials(echoed)
    assert "SEKRIT123" not in masked, masked
    assert f"page=2{escape}access_token={REDACTED}{escape}x=1" in masked


def test_urls_echoed_with_their_slashes_escaped_as_php_writes_json_are_masked():
    """PHP's json_encode writes "/" as "\\/": a DSN's password and a Slack webhook's
    key in a URL so escaped were looked for after "://" only, and left."""
    from django_pgjobs.redaction import mask_credentials

    dsn = json.dumps({"dsn": "postgres://app:s3cretpw@db/app"}).replace("/", "\\/")
    hook = json.dumps({"url": "https://hooks.slack.com/services/T0/B0/XXXXSECRET"})
    hook = hook.replace("/", "\\/")
    assert mask_credentials(dsn) == dsn.replace("s3cretpw", REDACTED)
    masked = mask_credentials(hook)
    assert "XXXXSECRET" not in masked and "hooks.slack.com\\/" + REDACTED in masked, masked


# -- a number, a byte dump's text column, a posted form ------------------------------------

PIN = "84731920551"


@pytest.mark.parametrize(
    "echoed",
    [
        {"pin": int(PIN)},
        {"pin": float(PIN)},  # a JSON number read back as a float (JavaScript, Go)
        {"at": [{"pin": int(PIN)}]},
    ],
)
def test_a_numeric_secret_echoed_as_a_number_is_masked_in_a_value(echoed):
    """A peer answering ``{"pin": 84731920551}``, read as JSON and returned by the task:
    the number was no string, and the job's result kept it."""
    for secret in (PIN, int(PIN)):  # a secret stored as text, or as a JSON number
        masked = Redactor([secret]).value(echoed)
        assert PIN not in json.dumps(masked) and REDACTED in json.dumps(masked), masked


@pytest.mark.parametrize(
    "text, masked",
    [
        ('{"pin": 84731920551}', f'{{"pin": {REDACTED}}}'),
        ("pin 84731920551.", f"pin {REDACTED}."),
        ("84731920551.0", f"{REDACTED}.0"),  # Python's repr of the float
        ("-84731920551", f"-{REDACTED}"),
        ("pin=84731920551&x=1", f"pin={REDACTED}&x=1"),
        ("pin%3D84731920551", f"pin%3D{REDACTED}"),  # no digit before it: "%3D" ends in D
        # Longer numbers that hold its digits are other numbers: an order, a timestamp.
        ("order 1847319205512 shipped", "order 1847319205512 shipped"),
        ("id 847319205510", "id 847319205510"),
        ("1.84731920551", "1.84731920551"),
    ],
)
def test_a_numeric_secret_is_masked_where_no_digit_adjoins_it(text, masked):
    assert Redactor([PIN]).text(text) == masked


def test_a_numeric_secret_with_leading_zeros_is_masked_as_the_number_it_is():
    """Posted as "0084731920551", echoed as the number a JSON parser made of it."""
    redactor = Redactor(["00" + PIN])
    assert redactor.text('{"pin": 84731920551}') == f'{{"pin": {REDACTED}}}'
    assert redactor.value({"pin": int(PIN)}) == {"pin": REDACTED}
    # Numbers shorter than MIN_SECRET_LENGTH are never masked: "0007" is no 7.
    assert Redactor(["0007"]).value({"n": 7, "s": "0007 and 7"}) == {
        "n": 7,
        "s": f"{REDACTED} and 7",
    }


def test_other_numbers_and_non_numeric_secrets_are_masked_as_before():
    redactor = Redactor([PIN, "ab12cd34"])
    value = {"n": 1847319205512, "b": True, "f": 1.5, "s": "xab12cd34y"}
    assert redactor.value(value) == {**value, "s": f"x{REDACTED}y"}


def _hexdump_c(data: bytes) -> str:
    """``hexdump -C``: 16 bytes a line, two spaces after the eighth, the text column
    between bars (a byte outside printable ASCII as ".")."""
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        pairs = [f"{byte:02x}" for byte in chunk]
        hexes = (" ".join(pairs[:8]) + "  " + " ".join(pairs[8:])).rstrip()
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {hexes:<49} |{text}|")
    return "\n".join([*lines, f"{len(data):08x}"])


def _xxd(data: bytes, group: int = 2) -> str:
    """``xxd`` (``-g1`` with group=1): offset and colon, bytes in groups, the text column
    after two spaces, no bars."""
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        groups = [chunk[i : i + group].hex() for i in range(0, len(chunk), group)]
        width = 16 * 2 + 16 // group - 1
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}: {' '.join(groups):<{width}}  {text}")
    return "\n".join(lines)


DUMPS: dict[str, Callable[[bytes], str]] = {
    "hexdump -C": _hexdump_c,
    "xxd": _xxd,
    "xxd -g1": lambda data: _xxd(data, 1),
    "xxd -g4": lambda data: _xxd(data, 4),
    "hexdump -C, in JSON": lambda data: json.dumps(_hexdump_c(data))[1:-1],
}


def _columns(dump: str) -> tuple[str, str]:
    """A dump's hex digits and its text column, each run together across lines."""
    hexes, texts = [], []
    for line in dump.replace("\\n", "\n").splitlines():
        found = re.match(r"[0-9a-f]{8}:? +((?:[0-9a-f*]+ {1,2})+) *\|?(.*?)\|?$", line)
        if found:
            hexes.append(found[1].replace(" ", ""))
            texts.append(found[2])
    return "".join(hexes), "".join(texts)


@pytest.mark.parametrize("dump", DUMPS.values(), ids=DUMPS.keys())
@pytest.mark.parametrize("before", [0, 7, 13])
def test_a_secret_in_a_byte_dump_cut_across_lines_is_masked_in_both_columns(dump, before):
    """A peer dumping the request it refused: the secret ran on over the next line, its
    hex and its text column each cut at 16 bytes, and neither part was masked."""
    request = b"POST / HTTP/1.1\r\n" + b"k" * before + b"X-Key: " + SECRET.encode() + b"\r\n\r\n"
    dumped = dump(request)
    masked = Redactor([SECRET]).text(f"peer said:\n{dumped}\nbye")
    assert masked.startswith("peer said:\n") and masked.endswith("\nbye"), masked
    hexes, text = _columns(masked)
    assert "POST / HTTP/1.1" in text and "X-Key: " in text, masked  # the rest is kept
    for at in range(len(SECRET) - 3):
        part = SECRET[at : at + 4]
        assert part not in text and part.encode().hex() not in hexes, (part, masked)


@pytest.mark.parametrize("dump", DUMPS.values(), ids=DUMPS.keys())
def test_a_byte_dump_without_a_secret_is_kept(dump):
    dumped = dump(b"GET /status HTTP/1.1\r\nHost: example.com\r\n\r\n" + bytes(range(256)))
    assert Redactor([SECRET]).text(dumped) == dumped


def _form(keep: str, space: str = "+", digits: str = "%{:02X}") -> Callable[[str], str]:
    """application/x-www-form-urlencoded as an encoder writes it: letters, digits and
    ``keep`` as they are, a space as ``space``, every other byte escaped."""

    def encode(text: str) -> str:
        out = []
        for ch in text:
            if ch == " ":
                out.append(space)
            elif ch.isascii() and (ch.isalnum() or ch in keep):
                out.append(ch)
            else:
                out += [digits.format(byte) for byte in ch.encode()]
        return "".join(out)

    return encode


FORMS: dict[str, Callable[[str], str]] = {
    "Python urlencode": lambda t: urllib.parse.urlencode({"k": t})[2:],
    "WHATWG URLSearchParams, Java, Ruby": _form("*-._"),
    "PHP urlencode, http_build_query": _form("-._"),
    "Go url.QueryEscape": _form("-._~"),
    ".NET WebUtility.UrlEncode": _form("-_.!*()"),
    ".NET HttpUtility.UrlEncode": _form("-_.!*()", digits="%{:02x}"),
    "jQuery.param": _form("!'()*~-_."),
    "form-encoded twice": lambda t: _form("*-._")(_form("*-._")(t)),
}


@pytest.mark.parametrize("encode", FORMS.values(), ids=FORMS.keys())
@pytest.mark.parametrize(
    "secret",
    [SECRET + " é", "two words here!", ("k3y +/~*é" * 200)[:1_500]],
    ids=["password", "passphrase", "long"],
)
def test_a_secret_echoed_in_a_posted_form_is_masked(encode, secret):
    """A peer echoing the form it was posted (an OAuth token request's client_secret),
    as its own encoder writes it: a space as "+" and then, encoded twice, as "%2B";
    and a secret longer than CHARACTER_WISE_MAX in any encoder's form but Python's."""
    echoed = encode(secret)
    assert echoed != secret
    # A field's name no credential's (client_secret's value is masked by its name).
    masked = Redactor([secret]).text(f"got grant_type=client_credentials&client={echoed}&x=1")
    assert masked == f"got grant_type=client_credentials&client={REDACTED}&x=1"


SERVICE_ACCOUNT = {
    "type": "service_account",
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END",
    "client_email": "robot@example-project.iam.gserviceaccount.com",
    "nested": [{"token": "tok-93f1c2aa71"}, 84731920551],
    "enabled": True,
}


def test_the_values_inside_a_json_secret_are_masked_each():
    """A secret may be any JSON value (``set_secrets``): a service account's dict. Masked
    as its Python repr, the strings inside it were not masked at all."""
    redactor = Redactor([SERVICE_ACCOUNT])
    echoed = json.dumps(
        {
            "key": SERVICE_ACCOUNT["private_key"],
            "who": SERVICE_ACCOUNT["client_email"],
            "auth": "Bearer-ish tok-93f1c2aa71",
            "pin": 84731920551,
            "note": "the account is enabled: true",
        }
    )
    masked = redactor.text(echoed)
    for leaked in ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "robot@example", "tok-93f1c2aa71"):
        assert leaked not in masked
    assert "84731920551" not in masked
    assert "true" in masked  # a boolean is one bit, no secret: every "true" stayed
    assert redactor.value({"pin": 84731920551}) == {"pin": REDACTED}
