"""A project that mounts the HTTP API under its own prefix: POST /api/jobs."""

from django.urls import include, path

urlpatterns = [path("api/", include("django_pgjobs.urls"))]
