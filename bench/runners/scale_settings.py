"""Settings for bench/scale.py: the soak's tasks, the queues its rows use, no scheduler."""

from soak_settings import *  # noqa: F403
from soak_settings import PGJOBS

PGJOBS = {
    **PGJOBS,
    "QUEUES": {name: {} for name in ("default", "mail", "reports", "drain", "claim")},
    "SCHEDULES": {},
}
