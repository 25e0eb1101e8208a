"""The ``http`` kind: call a webhook or an HTTP API.

Config: ``url``, ``method`` (POST), ``headers``, ``timeout`` (10 s),
``expected_status`` (empty: any 2xx), ``username`` (with the ``password``
secret: basic auth), ``api_key_header`` (X-Api-Key, with the ``api_key``
secret), ``max_response_bytes``. Secrets: ``token`` (sent as ``Authorization:
Bearer``), ``password``, ``api_key``, and ``url`` instead of the option for a URL
that is its own credential (a Slack webhook's). Redirects are not followed: a 3xx is
an answer like any other, judged by ``expected_status``.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import email.utils
import functools
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import conf, db
from ..exceptions import InvalidOption
from ..limits import plain_digits, shown
from ..redaction import keyed_path_service, names_a_credential
from . import deadline, destinations
from .base import ConnectorKind, Option, byte_count, seconds, secret_frames, str_dict
from .errors import ConnectorError, ConnectorMisconfigured, ConnectorThrottled
from .registry import register_kind

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
#: Most characters of a response body kept in a job's result or error.
BODY_IN_RESULT = 10_000


class HttpStatusError(ConnectorError):
    """The server answered with a status the connector does not expect."""

    def __init__(self, message: str, response: HttpResponse) -> None:
        self.response = response
        super().__init__(message)


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def text(self) -> str:
        """The body as text: in the charset its byte order mark or its ``Content-Type``
        says, else UTF-8; what is none of it replaced. Read as UTF-8 whatever it said, an
        answer in UTF-16 had a NUL after each character, and a secret it echoed so was
        masked in none of its forms."""
        charset = self.charset()
        try:
            return self.body.decode(charset, errors="replace")
        except (LookupError, UnicodeError, ValueError):  # rot13, base64: no text codecs
            return self.body.decode("utf-8", errors="replace")

    def charset(self) -> str:
        """The body's charset, by its byte order mark, then ``Content-Type``; UTF-8."""
        for mark, name in _BYTE_ORDER_MARKS:
            if self.body.startswith(mark):
                return name
        declared = _CHARSET.search(self.headers.get("content-type", ""))
        return declared[1] if declared else "utf-8"

    def json(self) -> Any:
        return json.loads(self.body)


#: Byte order marks and the codec that reads past each (UTF-32's before UTF-16's: the
#: little-endian UTF-32 mark starts with UTF-16's).
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CHARSET = re.compile(r"""[;\s]charset\s*=\s*["']?([A-Za-z0-9._:+-]{1,40})""", re.IGNORECASE)


def _http_url(url: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that isn't one
    except ValueError:
        return "must be an absolute http:// or https:// URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http:// or https:// URL"
    if parts.username is not None or parts.password is not None:
        # The config is plain text, shown in the admin: credentials go in secrets.
        return "must not carry credentials: use the username option and the password secret"
    if _UNSENDABLE.search(parts.path + parts.query):
        # http.client refuses them at every call (InvalidURL, UnicodeEncodeError).
        return (
            "must not hold spaces, control characters or letters that are not ASCII in "
            "its path or query: quote them (urllib.parse.quote: %20 for a space)"
        )
    return None


#: What http.client refuses in a request's path and query: a space, a control
#: character, a letter that is not ASCII (tab and line breaks: urlsplit drops them).
_UNSENDABLE = re.compile(r"[\x00-\x20\x7f]|[^\x00-\x7f]")


#: Headers that carry credentials: the config is plain text, shown in the admin. Refused
#: in a stored row too (its jobs fail); other credentials' names only when written
#: (``credential_headers``), so that a row saved before that rule keeps working.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def credential_headers(headers: dict[Any, Any]) -> list[str]:
    """The names in ``headers`` that name a credential (``X-Api-Key``, ``X-Auth-Token``,
    ``X-Hub-Signature``; ``redaction.names_a_credential``, the rule that masks a
    logged URL's query parameters; ``Idempotency-Key`` is none), sorted."""
    return sorted(name for name in headers if isinstance(name, str) and names_a_credential(name))


def credential_parameters(url: str) -> list[str]:
    """The names of the query parameters of ``url`` that name a credential
    (``api_key``, ``access_token``, ``X-Amz-Signature``), in order, each once."""
    try:
        query = urllib.parse.urlsplit(url).query
    except ValueError:
        return []
    # Split at ";" too, as some servers (and redaction) do: "?a=1;token=x".
    pairs = (pair.partition("=")[0] for pair in re.split("[&;]", query))
    names = (urllib.parse.unquote_plus(name) for name in pairs)
    return list(dict.fromkeys(name for name in names if names_a_credential(name)))


def _credential_names(config: Any) -> tuple[list[str], list[str]]:
    """The credential names of a config's headers and of its URL's query parameters
    (``credential_headers``, ``credential_parameters``), of any shape."""
    if not isinstance(config, dict):
        return [], []
    headers, url = config.get("headers"), config.get("url")
    return (
        credential_headers(headers) if isinstance(headers, dict) else [],
        credential_parameters(url) if isinstance(url, str) else [],
    )


def _names_credentials(what: str, names: list[str]) -> str:
    """``the header 'X-Api-Key' names a credential``, or ``the headers 'A', 'B' name
    credentials``."""
    listed = ", ".join(shown(name) for name in names)
    if len(names) == 1:
        return f"the {what} {listed} names a credential"
    return f"the {what}s {listed} name credentials"


def _credential_problems(headers: list[str], parameters: list[str]) -> dict[str, str]:
    """The problems of credential names in a config's headers and URL, by field."""
    problems = {}
    if headers:
        problems["config.headers"] = (
            f"{_names_credentials('header', headers)}, and headers are plain text shown in the "
            "admin: set api_key_header to the header's name and the api_key secret to "
            "its value (Authorization: the token or password secret)"
        )
    if parameters:
        problems["config.url"] = (
            f"{_names_credentials('query parameter', parameters)}, and the URL is plain "
            "text shown in the admin: send the key as a header (api_key_header and the "
            "api_key secret), or store it as the api_key secret and pass it from a task: "
            f"request(query={{{shown(parameters[0])}: connector.secret('api_key')}}), or "
            "set the url secret to the whole URL and leave url out"
        )
    return problems


def _keyed_path_problem(config: Any) -> dict[str, str]:
    """A webhook's URL with its key in the path (``KEYED_PATHS``) in plain config."""
    url = config.get("url") if isinstance(config, dict) else None
    try:
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        return {}
    service = keyed_path_service(parts.hostname or "", parts.path) if parts else None
    if service:
        # The URL is not shown: its path is the key.
        return {
            "config.url": f"is a {service} webhook's URL, whose path is its key, and the "
            "URL is plain text shown in the admin: set the url secret to it and leave "
            "url out"
        }
    return {}


def _username_problem(config: Any) -> dict[str, str]:
    """A basic auth username with a ":" (RFC 7617 refuses it): the server takes what
    follows the first one for the password, so part of a credential sat in the plain
    config. Only when written (``write_problems``): a row saved before works as it did."""
    username = config.get("username") if isinstance(config, dict) else None
    if isinstance(username, str) and ":" in username:
        return {
            "config.username": "must not hold ':': basic auth sends username:password, and "
            "the server takes what follows the first ':' for the password; put all of the "
            "password in the password secret"
        }
    return {}


#: A header name (RFC 9110 token); a value is Latin-1 text without control characters
#: but tab. http.client refuses others at send time, so every job failed instead.
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _header_name(name: str) -> str | None:
    if not HEADER_NAME.match(name):
        return f"{shown(name)} is not a header name: use letters, digits and !#$%&'*+-.^_`|~"
    return _framing(name)


#: Headers that frame the request's body, which urllib sets from the body itself: one of
#: the config's or a task's won over it, and Content-Length: 5 cut a payload to its first
#: 5 bytes, the call succeeding; a larger one held the call to its timeout, and
#: Transfer-Encoding sent a body the server read as empty.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})


def _framing(name: str) -> str | None:
    if name.lower() in FRAMING_HEADERS:
        return (
            f"{shown(name)} frames the request, which the connector does from its body: "
            "leave it out"
        )
    return None


def _api_key_header(name: str) -> str | None:
    """A header name that may carry the api_key secret: not Host, which proxies log
    and route by."""
    if name.lower() == "host":
        return (
            f"{shown(name)} names the server the request is for, which proxies log and "
            "route by: not where the api_key secret goes"
        )
    return _header_name(name)


def _sent_headers(headers: Any) -> dict[str, str]:
    """``request(headers=)`` as given; InvalidOption for a header that frames the body
    (``FRAMING_HEADERS``), nothing sent."""
    for name in headers or {}:
        if isinstance(name, str) and (problem := _framing(name)):
            raise InvalidOption("headers", problem)
    return headers or {}


def _plain_headers(headers: dict[Any, Any]) -> str | None:
    problem = str_dict(headers)
    if problem:
        return problem
    found = sorted(name for name in headers if name.lower() in CREDENTIAL_HEADERS)
    if found:
        return f"{found[0]} carries credentials: use the token or password secret instead"
    for name, value in headers.items():
        problem = _header_name(name)
        if problem:
            return problem
        if _CONTROL.search(value) or not _latin1(value):
            # The value is not shown: a header of the config may still carry a key.
            return f"the value of {shown(name)} must be Latin-1 text without line breaks"
    return None


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _method(method: str) -> str | None:
    return None if method.upper() in METHODS else f"must be one of {', '.join(METHODS)}"


#: Tokens ``request(method=)`` refuses: CONNECT asks for a tunnel, not the resource at
#: the URL, and TRACE has the server echo the request, credentials included, into the
#: answer, which becomes the job's result or error.
REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})


def request_method(method: Any) -> str:
    """``method`` as ``request(method=)`` sends it, upper-cased: an HTTP method token
    (RFC 9110, the header names' grammar), not CONNECT or TRACE; else InvalidOption.
    http.client sent "GE T" and "GET/1" as they were, and failed a line break or a
    non-ASCII letter only once connected, as a call to retry."""
    if not isinstance(method, str) or not HEADER_NAME.match(method):
        raise InvalidOption(
            "method",
            f"must be an HTTP method: a token such as GET or POST (letters, digits and "
            f"!#$%&'*+-.^_`|~), not {shown(method)}",
        )
    if method.upper() in REFUSED_METHODS:
        raise InvalidOption(
            "method",
            f"{method.upper()} is refused: CONNECT asks for a tunnel, not the URL, and "
            "TRACE echoes the request, credentials included, into the answer",
        )
    return method.upper()


def _statuses(value: list[Any]) -> str | None:
    if all(isinstance(code, int) and 100 <= code <= 599 for code in value):
        return None
    return "must be a list of HTTP status codes (100-599)"


def display_url(url: str) -> str:
    """The URL without credentials or query string, which may carry secrets."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx: an answer like any other


@functools.lru_cache(maxsize=8)
def _opener(allowed: tuple[str, ...] | None) -> urllib.request.OpenerDirector:
    """The opener for an allow-list (``PGJOBS["HTTP_ALLOWED_HOSTS"]``; None: any host)."""
    return urllib.request.build_opener(_NoRedirects, *destinations.handlers(allowed))


def _allowed_hosts() -> tuple[str, ...] | None:
    allowed = conf.get("HTTP_ALLOWED_HOSTS")
    return None if allowed is None else tuple(allowed)


@register_kind
class HttpConnector(ConnectorKind):
    kind = "http"
    label = "HTTP (webhook, API)"
    options = (
        Option("url", str, help="Absolute http(s) URL.", check=_http_url),
        Option("method", str, "POST", check=_method),
        Option("headers", dict, {}, "Extra request headers (not secret).", check=_plain_headers),
        Option("timeout", (int, float), 10.0, "Seconds.", check=seconds),
        Option("expected_status", list, [], "Status codes that mean success.", check=_statuses),
        Option("username", str, "", "With the password secret: basic auth."),
        Option(
            "api_key_header",
            str,
            "X-Api-Key",
            "Header carrying the api_key secret.",
            _api_key_header,
        ),
        Option("max_response_bytes", int, 1_000_000, check=byte_count),
    )
    secrets = ("token", "password", "api_key", "url")
    secret_options = ("url",)

    @classmethod
    def write_problems(cls, config: dict[str, Any]) -> dict[str, str]:
        """A credential in a header's or a query parameter's name, or a webhook's URL
        whose path is its key: the config is plain text, shown in the admin. Only when
        written (``ConnectorKind.write_problems``)."""
        problems = _credential_problems(*_credential_names(config)) | _keyed_path_problem(config)
        return problems | _username_problem(config)

    @classmethod
    def secret_problems(cls, values: dict[str, Any]) -> dict[str, str]:
        """The url secret must be a URL the option takes (the message doesn't show it)."""
        if "url" not in values:
            return {}
        url = values["url"]
        problem = _http_url(url) if isinstance(url, str) else "must be a string"
        return {"secrets.url": f"the url {problem}"} if problem else {}

    @classmethod
    def added_write_problems(cls, config: dict[str, Any], stored: Any) -> dict[str, str]:
        """Only the credential names the stored row did not have (header names in any
        case): an edit that removes one of its several is saved, and one that adds a
        name is refused naming it."""
        headers, parameters = _credential_names(config)
        had_headers, had_parameters = _credential_names(stored)
        had = {name.lower() for name in had_headers}
        problems = _credential_problems(
            [name for name in headers if name.lower() not in had],
            [name for name in parameters if name not in had_parameters],
        )
        keyed = _keyed_path_problem(config)
        if keyed != _keyed_path_problem(stored):
            problems |= keyed
        stored_username = stored.get("username") if isinstance(stored, dict) else None
        if config.get("username") != stored_username:
            problems |= _username_problem(config)
        return problems

    @secret_frames
    def request(
        self,
        payload: Any = None,
        *,
        method: str | None = None,
        path: str = "",
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        check: bool = True,
    ) -> HttpResponse:
        """Send one request; ``payload`` (if not None) goes as JSON, ``data`` as is.

        ``path`` and ``query`` extend the configured URL. With ``check`` a status
        other than the expected ones raises HttpStatusError.
        """
        method = request_method(self.config["method"] if method is None else method)
        headers = _sent_headers(headers)  # a dict from here on
        # A server's refusal may echo them: masked like secrets, though none holds them.
        self.mask_also(_credential_values(headers, query or {}))
        url = self._url(path, query)
        all_headers = {**self.config["headers"], **self._auth_headers(), **headers}
        if payload is not None:
            data = json.dumps(payload).encode()
            all_headers.setdefault("Content-Type", "application/json")
        outgoing = urllib.request.Request(url, data=data, headers=all_headers, method=method)
        # Every message names it: a path may carry a secret (an API's /bot<token>/...).
        where = f"{method} {self._shown(url)}"
        if not urllib.parse.urlsplit(url).path.isascii():  # a task's path: http.client's
            # UnicodeEncodeError said only "ordinal not in range(128)".
            raise ConnectorError(
                f"{where} failed: the path holds a letter that is not ASCII; quote it "
                "(urllib.parse.quote)"
            )
        timeout = self.config["timeout"]
        try:
            with deadline.bounding(timeout) as bound:
                try:
                    response = self._exchange(outgoing, timeout, where)
                except Exception:
                    if not bound.ran_out():
                        raise
                    raise ConnectorError(
                        f"{where} failed: no whole answer within the timeout ({timeout:g} s)"
                    ) from None
        except http.client.InvalidURL:
            # Its message shows the path with the query string, which display_url hides.
            raise ConnectorError(
                f"{where} failed: the path or query holds a space or a control character; "
                "quote it (urllib.parse.quote)"
            ) from None
        except http.client.IncompleteRead:
            raise ConnectorError(
                f"{where} failed: answer cut short: its chunked body broke off or is malformed"
            ) from None
        except http.client.HTTPException as problem:  # BadStatusLine, LineTooLong...
            # A peer answering garbage: a failed call like any other, retried.
            detail = f"{type(problem).__name__}: {shown(str(problem))}"
            raise ConnectorError(
                self.redact(f"{where} failed: the answer is not HTTP ({detail})")
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as problem:
            reason = getattr(problem, "reason", problem)
            raise ConnectorError(self.redact(f"{where} failed: {reason}")) from None
        if check and response.status in THROTTLE_STATUSES and not self.expects(response.status):
            delay = retry_after(response.headers.get("retry-after"))
            if delay is not None:
                throttle(self.name, delay)
                raise ConnectorThrottled(self.name, delay, response.status)
        if check and not self.expects(response.status):
            excerpt = self.redact_head(response.text, 500)
            raise HttpStatusError(f"{where} answered {response.status}: {excerpt}", response)
        return response

    def expects(self, status: int) -> bool:
        expected = self.config["expected_status"]
        return status in expected if expected else 200 <= status < 300

    def call(self, payload: Any = None, **options: Any) -> dict[str, Any]:
        """Send ``payload`` as JSON with the configured method; the answer is the result."""
        response = self.request(payload, **options)
        body: Any = self.redact_head(response.text, BODY_IN_RESULT)
        if response.headers.get("content-type", "").startswith("application/json"):
            # Mislabelled, or nested too deep for json (RecursionError): keep the text.
            with contextlib.suppress(ValueError, RecursionError):
                body = json.loads(body)
        return {"status": response.status, "body": body}

    def test(self) -> str:
        response = self.request(method="HEAD", check=False)
        return f"HEAD {self._shown(self._base_url())} answered {response.status}"

    # -- helpers -------------------------------------------------------------------------

    def masked_values(self) -> list[Any]:
        """The secrets, the parts of the url secret a server echoes alone (its path, on
        a 404 page; the path's segments that look like keys, its query's values), and
        the credentials of a row's plain config saved before the rules refused them."""
        url = self.secret("url")
        secret_parts = _secret_parts(url) if isinstance(url, str) else []
        config_url = self.config.get("url")
        query = _query(config_url) if isinstance(config_url, str) else {}
        plain = _credential_values(self.config.get("headers") or {}, query)
        return super().masked_values() + secret_parts + plain

    def _shown(self, url: str) -> str:
        """``display_url(url)``, its path's secrets masked: its scheme and host stay (the
        url secret, masked whole, would take them with it)."""
        shown = display_url(url)
        parts = urllib.parse.urlsplit(shown)
        origin = f"{parts.scheme}://{parts.netloc}"
        return origin + self.redact(shown[len(origin) :])

    def _base_url(self) -> str:
        """The url option, or the url secret: ConnectorMisconfigured, not showing it, for
        a secret that is no http(s) URL (written by SQL), which urllib's errors quote."""
        problems = self.secret_problems(self.secret_values())
        if problems:
            raise ConnectorMisconfigured(self.name, problems)
        return self.option("url")

    def _url(self, path: str, query: dict[str, Any] | None) -> str:
        # Into the URL's parts: appended to the whole URL, a path went after the
        # configured query string ("/hook?sig=X/more"), into the query.
        parts = urllib.parse.urlsplit(self._base_url())
        full_path, full_query = parts.path, parts.query
        if path:
            full_path = full_path.rstrip("/") + "/" + path.lstrip("/")
        if query:
            extra = urllib.parse.urlencode(query, doseq=True)
            full_query = f"{full_query}&{extra}" if full_query else extra
        return urllib.parse.urlunsplit(parts._replace(path=full_path, query=full_query))

    def _exchange(
        self, outgoing: urllib.request.Request, timeout: float, where: str
    ) -> HttpResponse:
        opener = _opener(_allowed_hosts())
        try:
            with opener.open(outgoing, timeout=timeout) as answer:
                return self._response(answer.status, answer.headers, answer, where)
        except urllib.error.HTTPError as answer:
            return self._response(answer.code, answer.headers, answer.fp, where)

    def _auth_headers(self) -> dict[str, str]:
        headers = {}
        if self.secret("api_key"):
            headers[self.config["api_key_header"]] = self.secret("api_key")
        if self.secret("token"):
            headers["Authorization"] = f"Bearer {self.secret('token')}"
        elif self.config["username"] or self.secret("password"):
            pair = f"{self.config['username']}:{self.secret('password', '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers

    def _response(self, status: int, headers: Any, stream: Any, where: str) -> HttpResponse:
        limit = self.config["max_response_bytes"]
        body = stream.read(limit + 1)
        # Its time up once the answer was whole is no failure (the call did happen: a
        # retry would repeat it), so the deadline ends here, not at `expired` later.
        if deadline.settle() and not _framed(stream):
            # Read up to the peer's close: the end of file may be the deadline's shutdown.
            raise ConnectorError(f"{where} failed: the answer may be cut short")
        if len(body) > limit:
            raise ConnectorError(f"{where}: response over max_response_bytes ({limit})")
        # read(amt) returns what came before the peer closed, without an error: what
        # its Content-Length announced and no byte brought is still counted here.
        missing = getattr(stream, "length", None) or 0  # None: chunked, or no length said
        if missing:
            raise ConnectorError(
                f"{where} failed: answer cut short: {len(body)} of {len(body) + missing} bytes"
            )
        return HttpResponse(status, {k.lower(): v for k, v in headers.items()}, body)


def _query(url: str) -> dict[str, list[str]]:
    try:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query, keep_blank_values=True)
    except ValueError:
        return {}


def _credential_values(headers: Any, query: Any) -> list[str]:
    """The values of the headers and the query parameters named as credentials
    (``names_a_credential``), and of each header's the part after its scheme
    (``Token x``: ``x``, which a server may echo alone), of any shape."""
    values: list[str] = []
    if isinstance(headers, dict):
        for name in credential_headers(headers):
            value = headers[name]
            if isinstance(value, str):
                values += [value, value.split(None, 1)[-1]]
    if isinstance(query, dict):
        for name, value in query.items():
            if isinstance(name, str) and names_a_credential(name):
                listed = value if isinstance(value, list | tuple) else [value]
                values += [str(item) for item in listed if item is not None]
    return values


#: A path segment that looks like a key rather than a word: a digit in it, or long.
_KEY_LIKE = re.compile(r".*\d|.{16}")
#: A long run of a key's characters inside a segment: a Telegram bot's is
#: ``bot<id>:<key>``, and a server may echo the key alone.
_KEY_RUN = re.compile(r"[A-Za-z0-9_-]{16,}")


def _secret_parts(url: str) -> list[str]:
    """The parts of a URL held as a secret that travel alone: its path (without its
    slashes at either end: "/" and "/services" are left readable in messages), its
    segments that look like keys (``_KEY_LIKE``) and long runs inside them
    (``_KEY_RUN``), and its query's values."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return []
    segments = [urllib.parse.unquote(segment) for segment in parts.path.split("/")]
    runs = _KEY_RUN.findall(urllib.parse.unquote(parts.path))
    values = [value for _, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    keys = [*filter(_KEY_LIKE.match, segments), *runs]
    return [parts.path.strip("/"), *keys, parts.query, *values]


def _framed(stream: Any) -> bool:
    """Whether the answer's end is told by its framing (Content-Length, chunked), not
    by the connection closing."""
    return bool(getattr(stream, "chunked", False)) or getattr(stream, "length", None) is not None


#: Answers that throttle the connector when they carry a Retry-After.
THROTTLE_STATUSES = frozenset({429, 503})
#: The longest a Retry-After is obeyed for, in seconds: a bigger one (or a date far
#: ahead) is taken as this, so that a confused server can't park jobs for days.
MAX_RETRY_AFTER = 3600.0


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delay-seconds or an HTTP-date), at most
    MAX_RETRY_AFTER; None if there is none or it can't be read."""
    if not value:
        return None
    value = value.strip()
    if plain_digits(value):
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def throttle(name: str, delay: float) -> None:
    """Make every job using connector ``name`` wait ``delay`` seconds from now (by the
    database's clock; a later deadline already set stays)."""
    db.execute("throttle_connector", {"name": name, "seconds": delay})
