"""The test project, with what tests/test_migrations.py changes in it through the environment.

- ``PGJOBS_TEST_OLD_MIGRATIONS=1``: pgjobs' migrations of before the squash
  (``tests/migrations_before_squash``).
- ``PGJOBS_TEST_SQLITE=<file>``: the ``default`` database is that SQLite file.
- ``PGJOBS_TEST_SQLITE_JOBS=<file>``: ``PGJOBS["DATABASE"]`` names an alias ``jobs``
  that is that SQLite file.
"""

import os

from testproject.settings import *  # noqa: F403
from testproject.settings import DATABASES, PGJOBS

if os.environ.get("PGJOBS_TEST_OLD_MIGRATIONS"):
    MIGRATION_MODULES = {"pgjobs": "tests.migrations_before_squash"}
if path := os.environ.get("PGJOBS_TEST_SQLITE"):
    DATABASES["default"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": path}
if path := os.environ.get("PGJOBS_TEST_SQLITE_JOBS"):
    DATABASES["jobs"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": path}
    PGJOBS["DATABASE"] = "jobs"
