"""Settings of the demo project and the test suite, read from the environment."""

import importlib.util
from pathlib import Path
from urllib.parse import unquote

import django
import environ

from testproject.testdb import test_database_name

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

SECRET_KEY = env("SECRET_KEY", default="insecure-demo-key-change-me")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://root@127.0.0.1:5432/pgjobs")}
# A socket directory comes percent-encoded in the URL's host (postgres://user@%2Fpath:5432/db);
# django-environ leaves it encoded.
DATABASES["default"]["HOST"] = unquote(DATABASES["default"]["HOST"])
# Each test run gets a database of its own, so that runs side by side on one server
# (two checkouts, CI beside a developer) never share or drop each other's. The name
# carries this host and the run's pid: tests/conftest.py drops those of runs that died.
DATABASES["default"]["TEST"] = {"NAME": test_database_name(DATABASES["default"]["NAME"])}

# A second alias, for tests of what a worker does with every database a task uses
# (tests/test_reliability.py sets it in a worker's environment).
if "SECOND_DATABASE_URL" in env.ENVIRON:
    DATABASES["second"] = env.db("SECOND_DATABASE_URL")
# The connection workers LISTEN on, when it must differ (PGJOBS["LISTEN_DATABASE"]):
# tests/test_liveness.py routes it through a proxy, or at another database.
if "LISTEN_DATABASE_URL" in env.ENVIRON:
    DATABASES["listen"] = env.db("LISTEN_DATABASE_URL")
# Behind PgBouncer in transaction mode (`./dev test` runs the worker tests so):
# DATABASE_URL is PgBouncer, DIRECT_DATABASE_URL the same server without it, for
# LISTEN alone (docs/howto/pgbouncer.md). Its test database is default's.
BEHIND_PGBOUNCER = "DIRECT_DATABASE_URL" in env.ENVIRON
if BEHIND_PGBOUNCER:
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES.setdefault("listen", env.db("DIRECT_DATABASE_URL"))
    DATABASES["listen"]["HOST"] = unquote(DATABASES["listen"]["HOST"])
    DATABASES["listen"]["TEST"] = {"MIRROR": "default"}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_pgjobs",
    "testproject.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Tests only: make this process's clock run this many seconds ahead of the real one
# (negative: behind), as on a host whose clock is off (tests/test_clocks.py).
if CLOCK_OFFSET := env.float("PGJOBS_TEST_CLOCK_OFFSET", default=0.0):
    import datetime as _datetime

    from django.utils import timezone as _timezone

    _real_now = _timezone.now
    _timezone.now = lambda: _real_now() + _datetime.timedelta(seconds=CLOCK_OFFSET)

PGJOBS = {
    "QUEUES": {
        "default": {},
        "mail": {"concurrency": 2},
        "serial": {"blocking": True},
    },
    "POLL_INTERVAL": env.float("PGJOBS_POLL_INTERVAL", default=2.0),
    "SHUTDOWN_TIMEOUT": env.float("PGJOBS_SHUTDOWN_TIMEOUT", default=30.0),
    "HEARTBEAT_INTERVAL": env.float("PGJOBS_HEARTBEAT_INTERVAL", default=5.0),
    "WORKER_STALE_AFTER": env.float("PGJOBS_WORKER_STALE_AFTER", default=60.0),
    "RESCUE_INTERVAL": env.float("PGJOBS_RESCUE_INTERVAL", default=30.0),
    # tests/test_many_hosts.py gives each simulated host's processes a name of its own.
    "HOST_NAME": env.str("PGJOBS_HOST_NAME", default=None),
    "LISTEN_DATABASE": "listen" if "listen" in DATABASES else None,
    # Hooks around execution and enqueue (docs/operations.md#middleware); tests set
    # them for their worker processes through the environment.
    "MIDDLEWARE": env.list("PGJOBS_MIDDLEWARE", default=[]),
    # Task modules outside the apps' tasks.py, imported at startup (task names are
    # looked up among registered tasks only): those of the test suite, but not in
    # `./dev demo` (PGJOBS_DEMO=1), whose admin listed their 53 tasks beside its 12.
    "TASK_MODULES": []
    if env.bool("PGJOBS_DEMO", default=False)
    else [
        "tests.tasks_for_tests",
        "tests.tasks_for_admin",
        "tests.tasks_for_connectors",
        "tests.tasks_for_flow",
        "tests.tasks_for_typed",
        "tests.django_tasks_for_tests",
    ],
    # Created in the Schedule table when `runscheduler` starts (then editable in the admin).
    "SCHEDULES": {
        "demo-every-minute": {
            "cron": "* * * * *",
            "task": "testproject.demo.tasks.add",
            "args": [20, 22],
        },
        "demo-weekday-mornings": {
            "cron": "30 8 * * mon-fri",
            "timezone": "Europe/Berlin",
            "task": "testproject.demo.tasks.send_welcome",
            "args": [1],
        },
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_pgjobs": {"handlers": ["console"], "level": env("PGJOBS_LOG_LEVEL", default="INFO")}
    },
}
# Tests of what runworker prints in a project that configures no logging set this.
if env.bool("PGJOBS_TEST_NO_LOGGING", default=False):
    del LOGGING

# Django's Tasks framework runs on pgjobs (docs/howto/django-tasks.md). On Django 5.2 it
# comes from the django-tasks backport, an app of its own.
TASKS = {"default": {"BACKEND": "django_pgjobs.backend.PgJobsBackend"}}
if importlib.util.find_spec("django_tasks"):
    INSTALLED_APPS.append("django_tasks")
# Mail goes to the console (the worker's log); Django 6.1 configures it with MAILERS.
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
