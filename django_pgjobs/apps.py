from typing import Any

from django.apps import AppConfig
from django.apps import apps as django_apps
from django.db.models.signals import post_migrate


class PgJobsConfig(AppConfig):
    name = "django_pgjobs"
    label = "pgjobs"
    verbose_name = "Background jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
        from .tasks import import_task_modules

        # Register @task functions living in each installed app's tasks.py and in
        # PGJOBS["TASK_MODULES"]: task names resolve against this registry only.
        import_task_modules()
        from django.db.backends.signals import connection_created

        from .events import switch_off_in_database

        connection_created.connect(switch_off_in_database, dispatch_uid="pgjobs-events-off")
        post_migrate.connect(_sync_queues, sender=self)
        if django_apps.is_installed("django.contrib.admin"):
            # Connector and API token admins live beside their features.
            from .api import admin as _api_admin  # noqa: F401
            from .connectors import admin as _connector_admin  # noqa: F401


def _sync_queues(using: str, apps: Any = None, **kwargs: Any) -> None:
    from . import conf
    from .queues import sync_from_settings

    try:
        model = (apps or django_apps).get_model("pgjobs", "Queue")
    except LookupError:
        return  # migrated backwards past the queue table
    if using == conf.get("DATABASE"):
        sync_from_settings(using, model, warn=True)  # the table as the migrations left it
