"""The HTTP API: ``path("", include("django_pgjobs.urls"))`` gives

- ``POST /jobs``              enqueue a job (``POST /jobs/`` too)
- ``GET  /jobs/<id>``         a job's state, attempts, errors and result
- ``POST /jobs/run``          run due jobs in this request
- ``GET  /jobs/openapi.yaml`` the OpenAPI description

The ``jobs`` prefix is ours, so the paths are those of DESIGN.md whatever the
project's APPEND_SLASH: a POST to ``/jobs`` must resolve as it is, since Django
cannot redirect a POST to ``/jobs/``. Mount it elsewhere with a prefix of your
own: ``path("api/", include("django_pgjobs.urls"))`` gives ``POST /api/jobs``.
See docs/http-api.md.
"""

from django.urls import path

from .api import views

app_name = "pgjobs"

urlpatterns = [
    path("jobs", views.enqueue, name="enqueue"),
    # Clients written for the trailing slash keep working. Unnamed, so that
    # reverse("pgjobs:enqueue") gives the contract's "jobs".
    path("jobs/", views.enqueue),
    path("jobs/run", views.run, name="run"),
    path("jobs/openapi.yaml", views.openapi, name="openapi"),
    # Any other path, so that an id that is none gets the API's JSON 404: with
    # <int:>, 4,301 digits (int() refuses them), "-1" or "abc" matched no pattern and
    # got Django's HTML page, and with <str:> so did "1/" and "1/errors". After the
    # literal paths, which it would shadow.
    path("jobs/<path:job_id>", views.job_detail, name="job"),
]
