"""The HTTP API: ``path("jobs/", include("django_pgjobs.urls"))``. See docs/http-api.md."""
