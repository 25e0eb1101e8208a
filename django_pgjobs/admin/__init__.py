"""The Django admin as an operator console for jobs, queues, schedules, workers and
schedulers.

Connectors and API tokens have their admins beside their features
(``connectors/admin.py``, ``api/admin.py``), registered from ``apps.py``.

Every state-changing view is POST with CSRF, requires the Django permission
of the model (403 without it), and calls the library functions the worker
and the API use (``transitions``, ``queues``, ``workers``).
"""

from django.contrib import admin

from ..models import Job, Queue, Schedule, SchedulerProcess, WorkerProcess
from .jobs import JobAdmin
from .queues import QueueAdmin
from .schedulers import SchedulerProcessAdmin
from .schedules import ScheduleAdmin
from .workers import WorkerProcessAdmin

admin.site.register(Job, JobAdmin)
admin.site.register(Queue, QueueAdmin)
admin.site.register(WorkerProcess, WorkerProcessAdmin)
admin.site.register(Schedule, ScheduleAdmin)
admin.site.register(SchedulerProcess, SchedulerProcessAdmin)
