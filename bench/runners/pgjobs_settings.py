"""Settings for benchmarking django-pgjobs: the test project's, minus debugging, plus
the recommended prepared statements.

DEBUG=True would make Django keep every query in memory and slow each one down.
"""

import os

from testproject.settings import *  # noqa: F403
from testproject.settings import LOGGING

DEBUG = False
PGJOBS = {
    "QUEUES": {"default": {}},
    "EVENTS": os.environ.get("PGJOBS_EVENTS", "1") != "0",
    "TASK_MODULES": ["pgjobs_tasks"],
}
# A direct connection, so prepared statements, as docs/howto/pgbouncer.md recommends
# for one: Job.enqueue's insert, and a worker's statements that read no job rows.
# PGJOBS_PREPARE_THRESHOLD=none measures without them.
_threshold = os.environ.get("PGJOBS_PREPARE_THRESHOLD", "5")
DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (  # noqa: F405
    None if _threshold == "none" else int(_threshold)
)
# The test project's demo tasks name queues "mail" and "serial", which QUEUES leaves
# out: declaring them would give every worker three queues to claim from. They are
# never enqueued here, so the check that says so (pgjobs.W002) is noise in migrate.
SILENCED_SYSTEM_CHECKS = ["pgjobs.W002"]
LOGGING["loggers"]["django_pgjobs"]["level"] = os.environ.get("PGJOBS_LOG_LEVEL", "WARNING")
