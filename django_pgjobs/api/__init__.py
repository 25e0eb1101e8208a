"""The HTTP API: ``path("", include("django_pgjobs.urls"))``. See docs/http-api.md."""
