"""A project whose async view waits for a job: GET /wait/<id> (tests/test_events.py)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from django_pgjobs.models import Job


async def wait_for_job(request: HttpRequest, pk: int) -> HttpResponse:
    job = await Job.objects.aget(pk=pk)
    try:
        job = await job.async_wait(timeout=0.2)
    except TimeoutError:
        return HttpResponse("timeout")
    return HttpResponse(job.state)


urlpatterns = [path("wait/<int:pk>", wait_for_job)]
