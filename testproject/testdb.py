"""Names of test databases: one per test run, recognisable after the run died."""

from __future__ import annotations

import hashlib
import os
import re
import socket

#: test_<database>_<host>_<pid>; ``_tutorial`` and other suffixes may follow.
_PATTERN = re.compile(r"^test_.+_h([0-9a-f]{6})_p(\d+)(?:_.*)?$")


def host_token() -> str:
    """Six hex digits naming this host: pids only mean something on their own host."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def test_database_name(name: str, pid: int | None = None) -> str:
    """The test database of the run with process id ``pid`` (default: this one)."""
    return f"test_{name}_h{host_token()}_p{pid or os.getpid()}"


def is_leftover(name: str) -> bool:
    """Whether ``name`` is a test database of a run on this host that is gone."""
    match = _PATTERN.match(name)
    if match is None or match.group(1) != host_token():
        return False
    pid = int(match.group(2))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
