"""A minimal Django project for django-tasks-db (Django's Tasks framework, database backend)."""

import os
from urllib.parse import unquote, urlsplit

_url = urlsplit(os.environ["BENCH_DATABASE_URL"])

SECRET_KEY = "benchmark"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django_tasks_db"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": unquote(_url.hostname or ""),
        "PORT": _url.port or 5432,
        # bench/runners/djtasks_runner.py sets it per configuration: "None" keeps
        # connections open (persistent), "0" (Django's default) closes them per job.
        "CONN_MAX_AGE": (
            None
            if os.environ.get("BENCH_CONN_MAX_AGE") == "None"
            else int(os.environ.get("BENCH_CONN_MAX_AGE", "0"))
        ),
    }
}
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
