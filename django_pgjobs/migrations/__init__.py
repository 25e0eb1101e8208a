"""pgjobs' migrations. Those that install or change triggers run SQL files from ``sql/``.

See README.md here for how to write one.
"""

from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent / "sql"


def run_sql_file(name: str) -> migrations.RunSQL:
    """Run ``sql/<name>.sql`` forwards and ``sql/<name>.reverse.sql`` backwards."""
    return migrations.RunSQL(
        (SQL_DIR / f"{name}.sql").read_text(),
        (SQL_DIR / f"{name}.reverse.sql").read_text(),
    )
