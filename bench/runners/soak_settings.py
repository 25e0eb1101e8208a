"""Settings for bench/soak.py: the benchmark's, plus a cron tick every minute and a
prune that runs while the soak does (short retention, so that it deletes rows)."""

import os

from pgjobs_settings import *  # noqa: F403
from pgjobs_settings import PGJOBS

PGJOBS = {
    **PGJOBS,
    "TASK_MODULES": ["pgjobs_tasks", "soak_tasks"],
    "SCHEDULES": {"soak-tick": {"cron": "* * * * *", "task": "soak_tasks.tick"}},
    "PRUNE_AFTER": float(os.environ.get("SOAK_PRUNE_AFTER", "120")),
    "PRUNE_INTERVAL": float(os.environ.get("SOAK_PRUNE_INTERVAL", "30")),
}
