"""The SQL of django_pgjobs/sql/ is read once, when django_pgjobs.db is imported."""

from __future__ import annotations

import pytest

from django_pgjobs import db


def test_statements_are_not_read_from_disk_once_imported(tmp_path, monkeypatch):
    # An upgrade that replaces the installed package under running processes (pip
    # removes the old files first) made the first use of a statement fail:
    # FileNotFoundError in a worker's shutdown, a 500 from POST /jobs/run. Every
    # statement is read with the module, as Python reads the module's own code.
    claim = db.statement("claim")
    assert "FOR UPDATE SKIP LOCKED" in claim
    monkeypatch.setattr(db, "SQL_DIR", tmp_path / "gone")
    db.statement.cache_clear()
    try:
        assert db.statement("claim") == claim  # its fragment included as before
        assert db.statement("hand_back_unheld")
    finally:
        db.statement.cache_clear()


def test_an_unknown_statement_is_named():
    with pytest.raises(LookupError, match="no_such_statement"):
        db.statement("no_such_statement")
