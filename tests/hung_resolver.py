"""Run connectors' calls where the name server never answers, and print how each ended.

tests/test_connector_deadlines.py runs this in mount and network namespaces of its own,
where /etc/resolv.conf names 127.0.0.1 and /etc/hosts is the test's: this script
serves 127.0.0.1:53 by reading queries and answering none, as a hung resolver does.
Its argument: {"listen": [addresses], "cases": {case: [kind, config, allowed hosts]}};
each address of "listen" gets a port (the same for all) whose accept queue is full,
so connecting to it hangs, and "{port}" in a case's config is that port. Each call
runs on a thread waited on for WAIT seconds; prints one JSON object:
{case: {"error": str or None, "seconds": float or None (still running)}}.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import django

WAIT = 8.0


def silent_name_server() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 53))
    while True:
        server.recv(4096)  # and never an answer


@contextmanager
def full_listener(host: str, port: int = 0) -> Iterator[int]:
    """A port on ``host`` whose accept queue is full: a connect to it hangs (its SYN is
    dropped) until the client gives up. Yields the port."""
    listener = socket.create_server((host, port), backlog=0)
    queued: list[socket.socket] = []
    try:
        while True:  # a connect that doesn't complete at once: the queue is full
            client = socket.socket()
            client.setblocking(False)
            queued.append(client)
            if client.connect_ex(listener.getsockname()) != 0:
                break
        yield listener.getsockname()[1]
    finally:
        for client in queued:
            client.close()
        listener.close()


def with_port(config: dict[str, object], port: int) -> dict[str, object]:
    filled = {key: str(value).replace("{port}", str(port)) if isinstance(value, str) else value
              for key, value in config.items()}  # fmt: skip
    if "port" in filled:
        filled["port"] = int(filled["port"])  # type: ignore[arg-type]
    return filled


def ended(action: Callable[[], object]) -> dict[str, object]:
    outcome: dict[str, object] = {"error": None, "seconds": None}
    done = threading.Event()

    def call() -> None:
        started = time.monotonic()
        try:
            action()
        except Exception as error:  # the test looks at what it was
            outcome["error"] = f"{type(error).__name__}: {error}"
        outcome["seconds"] = time.monotonic() - started
        done.set()

    threading.Thread(target=call, daemon=True).start()
    done.wait(WAIT)
    return outcome


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    django.setup()
    from django.test import override_settings

    from django_pgjobs.connectors.http import HttpConnector
    from django_pgjobs.connectors.smtp import SmtpConnector

    threading.Thread(target=silent_name_server, daemon=True).start()
    asked = json.loads(sys.argv[1])
    report = {}
    with ExitStack() as listeners:
        port = 0
        for address in asked["listen"]:
            port = listeners.enter_context(full_listener(address, port))
        for case, (kind, config, allowed) in asked["cases"].items():
            connector_class = HttpConnector if kind == "http" else SmtpConnector
            connector = connector_class(case, with_port(config, port), {})
            call = connector.request if kind == "http" else connector.test
            with override_settings(PGJOBS={"HTTP_ALLOWED_HOSTS": allowed}):
                report[case] = ended(call)
    print(json.dumps(report), flush=True)
    os._exit(0)  # threads still waiting on the resolver: they are the point


if __name__ == "__main__":
    main()
