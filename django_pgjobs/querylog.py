"""Django's query log, which a worker's and a scheduler's threads empty themselves.

With ``DEBUG = True`` (every ``startproject``'s default) each Django connection logs
every statement it runs, with its time (``connection.queries``), up to 9,000 per
connection, so per thread. A web process empties its thread's logs at each request
(``django.db.reset_queries`` on ``request_started``). A worker serves no request: each
of its threads kept its last 9,000 statements, and each job's, claim's and write's
were added to them. Each long-running thread calls ``forget`` once per cycle instead
(a job, a pass of the loop, a batch of outcomes, a heartbeat, a tick), and a job
thread's ORM thread (an async task's ORM calls: leftovers.py) after each job.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import reset_queries


def forget() -> None:
    """Empty this thread's query logs, as Django does at each request.

    Only while DEBUG is on: with it off nothing is logged, except inside a test's
    ``assertNumQueries`` (or another CaptureQueriesContext), which must keep its own.
    """
    if settings.DEBUG:
        reset_queries()


def say_at_start(logger: logging.Logger) -> None:
    """One line at start while DEBUG is on: nothing else says it, and logging each
    query costs time even though the logs are emptied."""
    if settings.DEBUG:
        logger.info(
            "settings.DEBUG is on: Django logs every query (connection.queries); this "
            "process empties each thread's log at every job or pass, as Django does at "
            "every request. Turn DEBUG off in production."
        )
