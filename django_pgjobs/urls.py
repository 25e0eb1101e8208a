"""The HTTP API: ``path("jobs/", include("django_pgjobs.urls"))`` gives

- ``POST jobs/``            enqueue a job
- ``GET  jobs/<id>``        a job's state, attempts, errors and result
- ``POST jobs/run``         run due jobs in this request
- ``GET  jobs/openapi.yaml`` the OpenAPI description

See docs/http-api.md.
"""

from django.urls import path

from .api import views

app_name = "pgjobs"

urlpatterns = [
    path("", views.enqueue, name="enqueue"),
    path("<int:job_id>", views.job_detail, name="job"),
    path("run", views.run, name="run"),
    path("openapi.yaml", views.openapi, name="openapi"),
]
