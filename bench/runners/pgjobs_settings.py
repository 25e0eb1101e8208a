"""Settings for benchmarking django-pgjobs: the test project's, minus debugging.

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
LOGGING["loggers"]["django_pgjobs"]["level"] = os.environ.get("PGJOBS_LOG_LEVEL", "WARNING")
