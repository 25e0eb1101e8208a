"""End to end in a real browser: an operator finds a failed job, reads its traceback,
retries it after fixing the cause, and watches it complete on the dashboard.

Headless Debian chromium driven by playwright's own driver (never ``playwright
install``), Django served by pytest-django's live_server, jobs run by a real
``runworker`` process on the test database.

PGJOBS_SCREENSHOTS=docs writes the screenshots committed under docs/.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import django
import pytest
from django.contrib.auth.models import User
from django.db import connections
from django.utils import timezone

from django_pgjobs import Job
from django_pgjobs.states import JobState
from testproject.demo.models import Run
from tests.factories import JobFactory

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing: ./dev test installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the test's own ORM
    # calls are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
            # Within sync_playwright the test runs in a context of its own (a greenlet's
            # contextvars), where Django opens a connection apart from this thread's
            # usual one and nothing else closes it: it held the test database open, and
            # the session's drop of it failed ("being accessed by other users").
            connections.close_all()


def screenshot(page: object, name: str) -> None:
    """Save a screenshot of ``page``; on Django 5, as ``<name>-django5.png``."""
    folder = os.environ.get("PGJOBS_SCREENSHOTS")
    target = ROOT / folder if folder else ROOT / ".pytest_cache" / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    if django.VERSION[0] < 6:
        name = name.replace(".png", f"-django{django.VERSION[0]}.png")
    page.screenshot(path=str(target / name), full_page=True)


def log_in(context: object, live_server: object, next_url: str) -> object:
    User.objects.create_superuser("ops", "ops@example.com", "s3cret-pass")
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/login/?next={next_url}")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "s3cret-pass")
    page.click("input[type=submit]")
    return page


def an_hour_of_history() -> None:
    """Completed and failed jobs spread over the last hour, so the chart has a shape.

    None in its oldest minutes: the dashboard's totals are of the last 60 minutes,
    and a job leaving that window while a test waits for a total to grow would
    shrink it (it did, in CI, with jobs 59.5 minutes old)."""
    now = timezone.now()
    jobs = []
    for minute in range(55):
        at = now - timedelta(minutes=minute, seconds=30)
        done = 6 + int(5 * math.sin(minute / 6)) + minute % 3
        jobs += [JobFactory.build(completed=True, finished_at=at) for _ in range(done)]
        if minute % 7 == 3:  # two jobs fail three times each, in the minute they end
            failed = [
                {"attempt": n, "at": (at - timedelta(seconds=3 - n)).isoformat(),
                 "error": "TimeoutError: the mail server did not answer", "traceback": ""}
                for n in (1, 2, 3)
            ]  # fmt: skip
            jobs += [JobFactory.build(discarded=True, finished_at=at, errors=failed) for _ in "ab"]
    Job.objects.bulk_create(jobs)


def test_an_operator_retries_a_failed_job_and_watches_it_complete(
    browser, live_server, worker_process, wait
):
    an_hour_of_history()
    job = Job.enqueue("tests.tasks_for_admin.charge", args=[1042])
    worker = worker_process("--concurrency", "2", env={"PGJOBS_POLL_INTERVAL": "0.5"})
    # Generous deadlines: the machine may be busy with other suites.
    wait(lambda: Job.objects.get(pk=job.pk).state == JobState.DISCARDED, timeout=60)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    page = log_in(context, live_server, "/admin/pgjobs/job/")
    page.wait_for_selector("#result_list")

    # The list shows the discarded job; its page shows the error and the traceback.
    page.click("nav.pgjobs-tabs a.pgjobs-tab-discarded")
    page.click(f"#result_list a[href*='/pgjobs/job/{job.pk}/change/']")
    page.wait_for_selector("#pgjobs-timeline")
    timeline = page.inner_text("#pgjobs-timeline")
    assert "RuntimeError: order 1042: the payment service refused the charge" in timeline
    assert "tasks_for_admin.py" in page.inner_text(".pgjobs-traceback")  # the frame, visible
    screenshot(page, "admin-job-detail.png")

    # Meanwhile the dashboard is open in another tab.
    dashboard = context.new_page()
    dashboard.goto(f"{live_server.url}/admin/pgjobs/job/dashboard/")
    dashboard.wait_for_selector("#pgjobs-chart rect:not([height='0'])")  # a bar drawn
    completed_before = int(dashboard.inner_text("#pgjobs-completed-total"))
    dashboard.evaluate("window.pgjobsNotReloaded = true")

    Run.objects.create(tag="fixed", pid=0)  # the operator fixes what made it fail
    page.click("#pgjobs-retry")
    page.wait_for_selector(".messagelist .success")
    assert "will run again" in page.inner_text(".messagelist")

    shown = "Number(document.getElementById('pgjobs-completed-total').textContent)"
    dashboard.wait_for_function(f"{shown} > {completed_before}", timeout=60_000)
    assert dashboard.evaluate("window.pgjobsNotReloaded") is True, "the page must not reload"
    finished = Job.objects.get(pk=job.pk)
    assert finished.state == JobState.COMPLETED and finished.result == "order 1042 charged"
    screenshot(dashboard, "admin-dashboard.png")

    page.reload()
    assert "Attempt 2 completed" in page.inner_text("#pgjobs-timeline")
    context.close()
    assert worker.stop() == 0, worker.output()


def a_page_of_every_kind_of_job() -> None:
    """What an operator's list holds: every state, long task paths, long errors."""
    now = timezone.now()
    error = (
        "ConnectionRefusedError: [Errno 111] Connection refused while posting the invoice"
        " to https://billing.internal.example.com/api/v2/invoices"
    )
    failures = [{"attempt": 1, "at": now.isoformat(), "error": error, "traceback": "..."}]
    tasks = ["testproject.demo.tasks.send_welcome", "billing.integrations.accounting.tasks"
             ".export_invoices_to_the_accounting_system", "testproject.demo.tasks.add"]  # fmt: skip
    jobs = []
    states = ["completed", "discarded", "retryable", "executing", "scheduled", "waiting",
              "available", "cancelled", "completed", "discarded", "completed"]  # fmt: skip
    for n, trait in enumerate(states):
        extra = {"errors": failures} if trait in ("discarded", "retryable") else {}
        if trait in ("completed", "discarded"):
            extra |= {"attempted_at": now - timedelta(seconds=n + 2), "finished_at": now}
        jobs.append(
            JobFactory.build(
                **({} if trait == "available" else {trait: True}),
                **extra,
                task=tasks[n % 3],
                queue=["default", "mail", "reports-nightly"][n % 3],
                args=[n * 1000, "customer@example.com"],
                kwargs={"locale": "de-DE", "retry_reason": "payment provider timeout"},
            )
        )
    Job.objects.bulk_create(jobs)


def test_the_job_list_fits_a_1280_pixel_screen(browser, live_server):
    a_page_of_every_kind_of_job()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    page = log_in(context, live_server, "/admin/pgjobs/job/")
    page.wait_for_selector("#result_list")
    screenshot(page, "admin-job-list.png")
    widths = page.evaluate(
        """() => {
            const page = document.documentElement, results = document.querySelector('.results');
            return [page.scrollWidth, page.clientWidth, results.scrollWidth, results.clientWidth];
        }"""
    )
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"
    assert widths[2] <= widths[3], f"the list scrolls sideways: {widths}"
    headers = page.inner_text("#result_list thead")
    for column in ("LAST ERROR", "DURATION", "TIME"):
        assert column in headers.upper(), headers
    context.close()
