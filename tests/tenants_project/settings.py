"""A django-tenants project on the test settings: pgjobs shared, notes per tenant schema.

tests/test_tenants.py runs its commands in processes of their own, on a database of
their own (DATABASE_URL), since the engine and the apps differ from the suite's.
"""

from testproject.settings import *  # noqa: F403
from testproject.settings import DATABASES, PGJOBS, env

DATABASES = {"default": {**DATABASES["default"], "ENGINE": "django_tenants.postgresql_backend"}}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)

SHARED_APPS = [
    "django_tenants",
    "tests.tenants_project.customers",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_pgjobs",
]
TENANT_APPS = ["tests.tenants_project.notes"]
INSTALLED_APPS = SHARED_APPS + TENANT_APPS
TENANT_MODEL = "customers.Client"
TENANT_DOMAIN_MODEL = "customers.Domain"
MIDDLEWARE = []
ROOT_URLCONF = "tests.tenants_project.urls"

PGJOBS = {
    **PGJOBS,
    "TASK_MODULES": ["tests.tenants_project.notes.jobs"],
    "SCHEDULES": {},
    "MIDDLEWARE": env.list("PGJOBS_MIDDLEWARE", default=["django_pgjobs.tenants.TenantMiddleware"]),
}
