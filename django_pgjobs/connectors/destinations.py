"""Where ``http`` connectors may connect: ``PGJOBS["HTTP_ALLOWED_HOSTS"]``.

Without the setting (None) any host is allowed. With it, a request goes out only to
a host named in it (``api.example.com``, or ``*.example.com`` for its subdomains)
or to an address inside one of its networks (``203.0.113.7``, ``10.20.0.0/16``,
``2001:db8::/32``). Names are resolved here and each address is checked before the
socket connects to it, and the connection is made to that checked address: a name
that resolves elsewhere by the time of connecting (DNS rebinding) can't slip
through, and ``127.0.0.1`` can't be reached as ``[::ffff:127.0.0.1]``. Redirects
are never followed (``http.py``), so every connection is one the connector asked
for; proxies from the environment are not used while the allow-list is on (the
proxy, not this check, would choose the address).
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import urllib.request
from collections.abc import Iterable
from typing import Any

from . import deadline
from .errors import ConnectorRefused

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Destinations:
    """A parsed allow-list; ``connect`` is ``socket.create_connection`` restricted to it."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[Network] = []
        for entry in entries:
            self._add(entry)

    def _add(self, entry: Any) -> None:
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError(f"{entry!r} is not a host name, an address or a network")
        entry = entry.strip().lower()
        try:
            self.networks.append(ipaddress.ip_network(entry, strict=False))
            return
        except ValueError:
            pass
        name = entry.removeprefix("*.")
        if not name or any(c in name for c in "/:@[]* \t") or name.startswith("."):
            raise ValueError(f"{entry!r} is not a host name, an address or a network")
        if entry.startswith("*."):
            self.suffixes.append("." + name)
        else:
            self.names.add(name)

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.names or any(host.endswith(suffix) for suffix in self.suffixes)

    def allows_address(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def connect(
        self,
        address: tuple[str, int],
        timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
        source_address: Any = None,
    ) -> socket.socket:
        host, port = address
        if self.allows_name(host):
            return deadline.create_connection(address, timeout, source_address)
        # A lookup that fails (a resolver down for a minute, a name not there yet) is
        # no refusal by the owner: its gaierror fails the attempt, which is retried.
        found = deadline.lookup(host, port)
        allowed = [info for info in found if self.allows_address(info[4][0])]
        if not allowed:
            addresses = ", ".join(sorted({info[4][0] for info in found}))
            raise ConnectorRefused(
                f"{host} ({addresses}) is not allowed by PGJOBS['HTTP_ALLOWED_HOSTS']"
            )
        # The addresses checked above, not a new lookup.
        return deadline.connect_any(allowed, timeout, source_address)


def _connect(address: tuple[str, int], timeout: Any = None, *args: Any) -> socket.socket:
    """Any host: the lookup and the connecting within the request's deadline."""
    return deadline.create_connection(address, timeout, *args)


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, destinations: Destinations | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = destinations.connect if destinations else _connect


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, destinations: Destinations | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # TLS still checks the host name, whatever address was connected to.
        self._create_connection = destinations.connect if destinations else _connect


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, destinations: Destinations | None) -> None:
        super().__init__()
        self.destinations = destinations

    def http_open(self, req: Any) -> Any:
        connection = functools.partial(_HTTPConnection, destinations=self.destinations)
        return self.do_open(connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, destinations: Destinations | None) -> None:
        super().__init__()
        self.destinations = destinations

    def https_open(self, req: Any) -> Any:
        connection = functools.partial(_HTTPSConnection, destinations=self.destinations)
        return self.do_open(connection, req, context=self._context)


def handlers(entries: Iterable[str] | None) -> list[urllib.request.BaseHandler]:
    """urllib handlers whose connections keep to the request's ``deadline``, and, for an
    allow-list (``entries``; None: any host), connect only where it allows and use no
    proxy."""
    if entries is None:
        return [_HTTPHandler(None), _HTTPSHandler(None)]
    destinations = Destinations(entries)
    return [
        urllib.request.ProxyHandler({}),
        _HTTPHandler(destinations),
        _HTTPSHandler(destinations),
    ]
