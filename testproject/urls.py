from django.contrib import admin
from django.urls import include, path

from django_pgjobs.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view),  # Prometheus (docs/operations.md#metrics)
    path("", include("django_pgjobs.urls")),
]
