"""The modules moved out of the worker stand on their own: the worker owns a Completer
and a Claimer, never the other way round (one importing the worker would tie the
outcome writes, or the claims, back into the loop they were moved out of)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import django_pgjobs


@pytest.mark.parametrize("module", ["completer.py", "claimer.py"])
def test_the_modules_moved_out_of_the_worker_do_not_import_it(module):
    source = Path(django_pgjobs.__file__).with_name(module).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module or ''}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not [name for name in imported if name.split(".")[-1] == "worker"], imported
