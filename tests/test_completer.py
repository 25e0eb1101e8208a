"""The completer's module stands on its own: the worker owns a Completer, never the
other way round (a completer importing the worker would tie the outcome writes back
into the loop they were moved out of)."""

from __future__ import annotations

import ast
from pathlib import Path

import django_pgjobs


def test_the_completer_does_not_import_the_worker():
    source = Path(django_pgjobs.__file__).with_name("completer.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module or ''}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not [name for name in imported if name.split(".")[-1] == "worker"], imported
