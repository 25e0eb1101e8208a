"""``manage.py pgjobs SUBCOMMAND``: what the admin does, from a shell or a script.

Each subcommand checks what it was given (``selection``), calls the library
function the admin calls (``transitions``, ``queues``, ``stats``, ``health``...)
and prints a table, or one JSON document with ``--json``. Exit codes: 0 done,
1 refused or failed (bad input, unknown job or queue, a check that failed,
a question answered no), 2 a usage error.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, OperationalError
from django.db.models import QuerySet
from django.utils import timezone

from django_pgjobs import (
    clocks,
    conf,
    db,
    health,
    housekeeping,
    kept_errors,
    queues,
    schedules,
    shown,
    stats,
    tasks,
    transitions,
    unmigrated,
)
from django_pgjobs.cron import InvalidCron, UnknownTimezone
from django_pgjobs.exceptions import JobGone, PgJobsError, UniqueKeyHeld
from django_pgjobs.management import arguments
from django_pgjobs.models import Job, Queue, Schedule
from django_pgjobs.selection import (
    InvalidSelection,
    JobFilter,
    duration_as_given,
    duration_in_words,
    parse_duration,
    parse_ids,
    parse_queues,
)
from django_pgjobs.states import FINISHED, InvalidTransition, JobState
from django_pgjobs.stats import Tally
from django_pgjobs.templatetags.pgjobs_admin import duration

#: Most jobs ``list`` prints; most fire times ``schedules --next`` computes.
MAX_LIST = 10_000
MAX_NEXT = 100
#: How long ``list``'s read may take, as the admin's job list (``SCAN_SECONDS``): a filter
#: no index serves (a task gone, ``--before 20d``) reads every row when few match.
LIST_SECONDS = 5
#: How long counting the jobs a retry, cancel or delete by filter matches may take
#: before its question; past it, the question gives the planner's estimate.
COUNT_SECONDS = stats.COUNT_SECONDS


class Command(BaseCommand):
    help = (
        "Operate the job queue: stats, list, show, retry, cancel, delete, pause, resume, "
        "schedules, prune, health. `manage.py pgjobs SUBCOMMAND --help` tells more."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        # Not required by argparse, whose error named no subcommand ("the following
        # arguments are required: SUBCOMMAND"): handle() lists them.
        sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        add = _adder(sub, parser)
        add("stats", "Jobs per queue and state, the oldest due job per queue, the workers.")
        listing = add("list", "Jobs matching filters, newest first.")
        _filters(listing)
        listing.add_argument(
            "--limit", type=arguments.whole_number, default=50, help="Most jobs shown (50)."
        )
        show = add("show", "Everything about one job, with the traceback of each failed attempt.")
        show.add_argument("id", help="A job id.")
        for name, what in (
            (
                "retry",
                "Run jobs again now (discarded, cancelled, scheduled or retryable ones; "
                "completed ones only with --include-completed).",
            ),
            ("cancel", "Cancel jobs that have not finished (running ones lose their lease)."),
            ("delete", "Delete jobs that are not executing."),
        ):
            action = add(name, what + " By id, or by filter after a question.")
            action.add_argument("ids", nargs="*", help="Job ids.")
            _filters(action)
            action.add_argument("--yes", action="store_true", help="Don't ask; do it.")
            if name == "retry":
                action.add_argument(
                    "--include-completed",
                    action="store_true",
                    help="Run completed jobs again too: what each did the first time (a mail "
                    "sent, a payment taken) happens again.",
                )
        for name, what in (("pause", "Start no new jobs of"), ("resume", "Start jobs of")):
            toggle = add(name, f"{what} these queues.")
            toggle.add_argument("queues", nargs="+", help="Queue names.")
        listed = add("schedules", "Cron schedules: last and next fires, how late they are.")
        listed.add_argument(
            "--next", type=arguments.whole_number, default=3, help="Fire times shown per schedule."
        )
        prune = add("prune", "Delete finished jobs and fired-tick records older than a limit.")
        prune.add_argument(
            "--older-than", default=None, help="A duration (7d, 12h); default PRUNE_AFTER."
        )
        check = add("health", "Exit 1 unless the database, workers, queues and cron are fine.")
        check.add_argument(
            "--require-worker", action="store_true", help="Fail unless a worker runs on this host."
        )
        check.add_argument("--host", default=None, help="Check this host's workers (this one).")
        check.add_argument(
            "--stale-after", default=None, help="Heartbeat age that fails (WORKER_STALE_AFTER)."
        )
        check.add_argument("--max-age", default=None, help="Fail if a due job waited longer (off).")
        check.add_argument(
            "--queues",
            action="append",
            default=[],
            help="Queues whose age is checked (every unpaused one).",
        )
        check.add_argument(
            "--max-scheduler-lag",
            default="60s",
            help="Fail if a cron tick is later than this (60s); 'off'.",
        )
        check.add_argument(
            "--stranded",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Fail if a waiting job can never run (on when PRUNE_INTERVAL is None).",
        )
        self.subcommands = list(sub.choices)

    def handle(self, *args: Any, **options: Any) -> None:
        self.options = options
        if not options["subcommand"]:
            *most, last = self.subcommands
            raise CommandError(
                f"name a subcommand: {', '.join(most)} or {last} "
                "(`manage.py pgjobs SUBCOMMAND --help` tells more)",
                returncode=2,
            )
        handler: Callable[[], None] = getattr(self, "do_" + options["subcommand"])
        try:
            handler()
            self.stdout.flush()  # a reader that went away is found here, not at exit
        except BrokenPipeError:
            _reader_gone()
        except (InvalidSelection, PgJobsError) as error:
            raise CommandError(str(error), returncode=1) from None
        except DatabaseError as error:
            message = (
                unmigrated.explain(error, _db())
                or unmigrated.unreachable(error, _db())
                or f"database error: {_first_line(error)}"
            )
            raise CommandError(message, returncode=1) from None

    # -- reading ------------------------------------------------------------------------

    def do_stats(self) -> None:
        now = clocks.database_now(_db())  # worker heartbeats are stamped by the database
        depths = stats.queue_depths(now)
        finished = stats.finished_tallies()
        workers = stats.workers(now)
        for queue in depths:
            since = queue.pop("oldest_available_at")
            queue["oldest_due_at"] = since
            queue["oldest_due_seconds"] = None if since is None else _seconds(now - since)
        if self.emit(
            {
                "generated_at": now,
                "queues": depths,
                "finished": {s: {"count": t.value, "exact": t.exact} for s, t in finished.items()},
                "workers": workers,
            }
        ):
            return
        rows = [
            [
                q["name"],
                "paused" if q["paused"] else "running",
                *q["depth"].values(),
                duration(q["oldest_due_seconds"]),
            ]
            for q in depths
        ]
        self.table(["queue", "", *stats.DEPTH_STATES, "oldest due"], rows)
        self.say("finished: " + ", ".join(f"{state} {t}" for state, t in finished.items()))
        alive = sum(1 for w in workers if w["alive"])
        self.say(f"workers: {alive} alive, {len(workers) - alive} stale")
        if workers:
            self.table(
                ["id", "host", "pid", "queues", "threads", "heartbeat", ""],
                [
                    [
                        w["id"],
                        w["host"],
                        w["pid"],
                        w["not_shown"].get("queues") or _names(w["queues"]),
                        w["concurrency"],
                        duration(w["heartbeat_age"]) + " ago",
                        _worker_state(w),
                    ]
                    for w in workers
                ],
            )

    def do_list(self) -> None:
        selected = self.job_filter(ids=())
        limit = self.options["limit"]
        if not 1 <= limit <= MAX_LIST:
            raise InvalidSelection(f"--limit must be from 1 to {MAX_LIST}")
        jobs = _newest(selected.jobs().order_by("-id")[: limit + 1])
        more, jobs = len(jobs) > limit, jobs[:limit]
        if not jobs:
            self.note_unregistered(selected)
        if self.emit({"jobs": [job_summary(job) for job in jobs], "more": more}):
            return
        self.table(
            ["id", "state", "queue", "task", "attempt", "run at", "finished at"],
            [
                [
                    job.pk,
                    job.state,
                    job.queue,
                    job.task,
                    f"{job.attempt}/{job.max_attempts}",
                    _when(job.run_at),
                    _when(job.finished_at),
                ]
                for job in jobs
            ],
        )
        if not jobs:
            described = selected.describe()  # "every job" when nothing filters
            self.say("no jobs" if described == "every job" else f"no {described}")
        elif more:
            self.say(f"(the newest {limit}; --limit shows more)")

    def do_show(self) -> None:
        job = self.get_job(parse_ids([self.options["id"]])[0], printed=True)
        details = job_details(job)
        if self.emit(details):
            return
        structured = ("args", "kwargs", "meta", "result")
        for key, value in details.items():
            if key not in ("errors", "not_shown", *structured):
                self.say(f"{key + ':':<22}{_plain(value)}")
        for key in structured:
            text = details["not_shown"].get(key) or json.dumps(details[key], default=str)
            self.say(f"{key + ':':<22}{_printable(text)}")
        for index, error in enumerate(details["errors"]):
            if index == 1 and details["errors_not_kept"]:  # where they were
                count = details["errors_not_kept"]
                noun = "record" if count == 1 else "records"
                self.say(f"\n({count:,} more error {noun} not kept: a job keeps its first")
                self.say(f"and its latest {kept_errors.KEPT - 1})")
            self.say(
                f"\nattempt {_plain(error.get('attempt'))} at {_plain(_stored_time(error))}: "
                f"{_plain(error.get('error'))}"
            )
            if error.get("traceback"):
                self.say(_printable(str(error["traceback"]).rstrip(), keep_newlines=True))

    def do_schedules(self) -> None:
        count = self.options["next"]
        if not 0 <= count <= MAX_NEXT:
            raise InvalidSelection(f"--next must be from 0 to {MAX_NEXT}")
        now = timezone.now()
        # Not args and kwargs, which it doesn't print: a row written by SQL may hold 255 MB.
        rows = Schedule.objects.using(_db()).defer(*schedules.JOB_VALUES)
        listed = [schedule_summary(s, now, count) for s in rows]
        if self.emit({"schedules": listed}):
            return
        self.table(
            ["name", "enabled", "cron", "timezone", "task", "last fire", "next fire", "late"],
            [
                [
                    s["name"],
                    "yes" if s["enabled"] else "no",
                    s["cron"],
                    s["timezone"],
                    s["task"],
                    _when(s["last_fire_at"]),
                    _when(s["next_fire_at"]),
                    duration(s["late_seconds"]) if s["late_seconds"] else "",
                ]
                for s in listed
            ],
        )
        for s in listed:
            if s["problem"]:
                self.say(f"{_plain(s['name'])}: {_plain(s['problem'])}")
            elif count and s["upcoming"]:
                times = ", ".join(t.strftime("%a %Y-%m-%d %H:%M:%S %Z") for t in s["upcoming"])
                self.say(f"{_plain(s['name'])}: next {times}")
        if not listed:
            self.say("no schedules")

    def do_health(self) -> None:
        options = self.options
        lag = options["max_scheduler_lag"]
        checks = health.run_checks(
            host=None if options["host"] is None else arguments.host(options["host"]),
            require_worker=options["require_worker"],
            stale_after=_duration_or_none(options["stale_after"], "--stale-after"),
            max_age=_duration_or_none(options["max_age"], "--max-age"),
            queues=parse_queues(options["queues"]),
            scheduler_lag=None if lag == "off" else _positive(lag, "--max-scheduler-lag"),
            stranded=options["stranded"],
        )
        healthy = all(check.ok for check in checks)
        if not self.emit({"healthy": healthy, "checks": [c.as_dict() for c in checks]}):
            self.table(
                ["", "check", "detail"],
                [["ok" if c.ok else "FAIL", c.name, c.detail] for c in checks],
            )
        if not healthy:
            raise CommandError("unhealthy", returncode=1)

    # -- changing -------------------------------------------------------------------------

    def do_retry(self) -> None:
        # A completed job's task did its work (a mail sent, a payment taken): it runs
        # again only when --include-completed says so, as the admin asks first.
        include = bool(self.options["include_completed"])
        one = _retry_one if include else _retry_unless_completed
        many = functools.partial(transitions.retry_many, include_completed=include)
        self.change_jobs("retry", one=one, many=many, done="will run again")

    def do_cancel(self) -> None:
        self.change_jobs("cancel", one=_cancel_one, many=transitions.cancel_many, done="cancelled")

    def do_delete(self) -> None:
        self.change_jobs("delete", one=None, many=transitions.delete_many, done="deleted")

    def change_jobs(
        self,
        verb: str,
        *,
        one: Callable[[Job], str] | None,
        many: Callable[[Any], int],
        done: str,
    ) -> None:
        """By id: one transition per job, each reported (delete asks first). By filter:
        one UPDATE or DELETE for every match, after a question unless ``--yes``."""
        selected = self.job_filter(ids=self.options["ids"])
        if selected.by_id == selected.has_filters:
            problem = ", not both" if selected.by_id else ": none was given"
            raise InvalidSelection(
                f"{verb}: give job ids or filters (--state, --queue, --task, "
                f"--since, --before){problem}"
            )
        if selected.by_id and one is not None:
            self.report_each(verb, selected.ids, one)
            return
        # An unknown id is an error, as it is to retry, cancel and show; the others are
        # still deleted (after the question).
        unknown = _unknown_ids(selected.ids)
        if unknown and len(unknown) == len(selected.ids):
            raise CommandError(f"no job with id {_id_list(unknown)}; nothing done", returncode=1)
        self.change_matching(verb, selected, many=many, done=done)
        if unknown:
            raise CommandError(f"no job with id {_id_list(unknown)}", returncode=1)

    def change_matching(
        self, verb: str, selected: JobFilter, *, many: Callable[[Any], int], done: str
    ) -> None:
        """One statement for every job ``selected``, after a question unless ``--yes``.
        A retry says how many of them completed: left alone, or run again."""
        completed: Tally | None = None
        if verb == "retry":  # one statement counts both
            (matched, completed), estimated = _preview(
                [selected.jobs(), _completed_among(selected)]
            )
        else:
            (matched,), estimated = _preview([selected.jobs()])
        include = bool(self.options.get("include_completed"))
        report: dict[str, Any] = {"action": verb, "matched": matched.value, "changed": 0}
        if completed is not None:
            report["completed_left_alone"] = 0 if include else completed.value
        if matched.exact and matched.value == 0:
            # Nothing to ask about: a script without --yes is done, not refused.
            if not self.emit(report):
                self.say(f"no {selected.describe()}: nothing to {verb}")
            self.note_unregistered(selected)
            return
        # Every match completed and left alone: nothing would change, so nothing to ask.
        nothing_else = not include and completed == matched and matched.exact
        question = f"{verb} {matched} job(s): {selected.describe()}?"
        if completed is not None and completed.value:
            question += _completed_note(completed, include)
        if estimated:  # not counted in time: said why
            question += (
                f" (the planner's estimate: counting them took more than {COUNT_SECONDS:g} s; "
                "the change itself is not cut short)"
            )
        if not (self.options["yes"] or nothing_else or self.confirm(question)):
            raise CommandError("nothing done (answer y, or pass --yes)", returncode=1)
        report["changed"] = changed = many(selected.jobs())
        held: list[int] = []
        if verb == "retry":
            held, report["key_held"] = transitions.key_held_ids(
                selected.jobs(), include_completed=include
            )
            report["key_held_ids"] = held
        if not self.emit(report):
            self.say(f"{changed} job(s) {done}")
            if held:
                more = report["key_held"] - len(held)
                self.say(
                    f"{report['key_held']} job(s) {transitions.KEY_HELD_SAID}: ids "
                    f"{_id_list(held)}" + (f" and {more} more" if more else "")
                )
            if verb == "delete" and changed < matched.value:
                self.say("executing jobs are kept: cancel them first")
            if report.get("completed_left_alone"):
                self.say(
                    f"{completed} completed job(s) left alone: pass --include-completed to "
                    f"run them again ({RUNS_AGAIN})"
                )

    def report_each(self, verb: str, ids: Sequence[int], one: Callable[[Job], str]) -> None:
        jobs = Job.objects.using(_db()).in_bulk(list(ids))
        results = []
        for job_id in ids:
            job = jobs.get(job_id)
            if job is None:
                results.append({"id": job_id, "ok": False, "detail": "no such job"})
                continue
            try:
                results.append({"id": job_id, "ok": True, "detail": one(job), "state": job.state})
            except LeftAlone as left:  # not to be changed without an option: it said which
                results.append({"id": job_id, "ok": False, "detail": str(left), "state": job.state})
            except UniqueKeyHeld as held:  # an active job holds its key: named
                detail = f"can't {verb} it: {held.why}"
                results.append({"id": job_id, "ok": False, "detail": detail, "state": job.state})
            except JobGone:  # deleted or pruned since it was read: its state is no more
                detail = f"no longer exists (it was deleted or pruned): can't {verb} it"
                results.append({"id": job_id, "ok": False, "detail": detail, "state": None})
            except InvalidTransition:
                detail = f"is {job.state}: can't {verb} it"
                results.append({"id": job_id, "ok": False, "detail": detail, "state": job.state})
        if not self.emit({"action": verb, "results": results}):
            for result in results:
                self.say(f"job {result['id']}: {result['detail']}")
        if not all(result["ok"] for result in results):
            raise CommandError("some jobs could not be changed", returncode=1)

    def do_pause(self) -> None:
        self.set_paused(True)

    def do_resume(self) -> None:
        self.set_paused(False)

    def set_paused(self, paused: bool) -> None:
        names = parse_queues(self.options["queues"])
        if not names:  # only empty names ("", ","): it said nothing and changed nothing
            raise InvalidSelection(f"{self.options['subcommand']}: give at least one queue name")
        queues.sync_from_settings(_db())
        existing = set(
            Queue.objects.using(_db()).filter(name__in=names).values_list("name", flat=True)
        )
        unknown = [name for name in names if name not in existing]
        if unknown:
            missing = ", ".join(unknown)
            raise CommandError(f"no queue named {missing}; nothing changed", returncode=1)
        already = set(
            Queue.objects.using(_db())
            .filter(name__in=names, paused=paused)
            .values_list("name", flat=True)
        )
        queues.set_paused(names, paused)
        verb = "paused" if paused else "resumed"
        results = [{"queue": n, "changed": n not in already} for n in names]
        if not self.emit({"action": verb, "results": results}):
            for name in names:
                self.say(f"{name}: {'already ' if name in already else ''}{verb}")

    def do_prune(self) -> None:
        text = self.options["older_than"]
        if text is None:
            older_than = timedelta(seconds=conf.get("PRUNE_AFTER"))
            said = duration_in_words(conf.get("PRUNE_AFTER"))
        else:
            older_than = parse_duration(text, "--older-than")
            said = duration_as_given(text)
        done = housekeeping.pruned(timezone.now(), older_than)  # the scheduler's routine
        if not self.emit({**done, "older_than_seconds": older_than.total_seconds()}):
            self.say(
                f"deleted {done['jobs']} finished job(s) and {done['ticks']} tick record(s) "
                f"older than {said}, and "
                f"{done['rate_windows']} spent rate-limit window(s); cancelled "
                f"{done['stranded']} stranded job(s) (waiting jobs nothing can release)"
            )

    # -- helpers ----------------------------------------------------------------------------

    def job_filter(self, ids: Iterable[str]) -> JobFilter:
        o = self.options
        return JobFilter.parse(
            ids=ids,
            states=o["state"],
            queues=o["queue"],
            tasks=o["task"],
            since=o["since"],
            before=o["before"],
        )

    def note_unregistered(self, selected: JobFilter) -> None:
        """When nothing matched, say on stderr which ``--task`` names no task registered
        here has, with those like it: a typo said "no jobs" alone. A hint, never a
        refusal: jobs of a task whose code was removed are matched by its old name."""
        for name in selected.tasks:
            if tasks.registered_or_none(name) is not None:
                continue
            close = tasks.similar_names(name)
            meant = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            self.stderr.write(
                f"note: no task registered here is called {name!r}{meant}; jobs of a task "
                "no longer registered are matched all the same",
                style_func=self.style.NOTICE,
            )

    def get_job(self, job_id: int, *, printed: bool = False) -> Job:
        """The job ``job_id``; ``printed``: to print, with its first and latest error
        records only, however many its row holds (kept_errors), and each JSON value
        only within ``shown.limit()``, as the API and the admin; never to save."""
        jobs = Job.objects.using(_db())
        job = (shown.bounded(jobs) if printed else jobs).filter(pk=job_id).first()
        if job is None:
            raise CommandError(f"no job with id {job_id}", returncode=1)
        return shown.read(job)

    def confirm(self, question: str) -> bool:
        self.stderr.write(f"{question} [y/N] ", ending="")
        self.stderr.flush()
        answer = (self.options.get("stdin") or sys.stdin).readline()
        return answer.strip().lower() in ("y", "yes")

    def emit(self, data: Any) -> bool:
        """With --json, print ``data`` as one JSON document and return True."""
        if not self.options["json"]:
            return False
        self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False))
        return True

    def say(self, text: str) -> None:
        self.stdout.write(text)

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        if not rows:
            return
        cells = [[_plain(value) for value in row] for row in [headers, *rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for row in cells:
            self.say("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# -- what a job, a schedule looks like to a script ---------------------------------------


def job_summary(job: Job) -> dict[str, Any]:
    fields = (
        "id",
        "task",
        "queue",
        "state",
        "priority",
        "attempt",
        "max_attempts",
        "run_at",
        "created_at",
        "attempted_at",
        "finished_at",
    )
    return {field: getattr(job, field) for field in fields}


def job_details(job: Job) -> dict[str, Any]:
    errors = job.errors if isinstance(job.errors, list) else [{"error": job.errors}]
    return {
        **job_summary(job),
        "timeout": job.timeout,
        "unique_key": job.unique_key,
        "connector": job.connector,
        "worker": job.worker_id if job.state == "executing" else None,
        "pending_dependencies": job.pending_dependencies,
        "args": job.args,
        "kwargs": job.kwargs,
        "meta": job.meta,
        "result": job.result,
        "errors": [error if isinstance(error, dict) else {"error": error} for error in errors],
        "errors_not_kept": kept_errors.not_kept(job),
        "not_shown": getattr(job, "not_shown", {}),
    }


def schedule_summary(schedule: Schedule, now: datetime, count: int) -> dict[str, Any]:
    try:
        schedule.cron_schedule()
        problem = ""
    except (InvalidCron, UnknownTimezone) as error:
        problem = f"can't be planned: {error}"
    late = None
    if schedule.enabled and schedule.next_fire_at and schedule.next_fire_at < now:
        late = _seconds(now - schedule.next_fire_at)
    return {
        "name": schedule.name,
        "enabled": schedule.enabled,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "task": schedule.task,
        "queue": schedule.queue or None,
        "jitter": schedule.jitter,
        "overlap": schedule.overlap,
        "catch_up": schedule.catch_up,
        "last_fire_at": schedule.last_fire_at,
        "next_fire_at": schedule.next_fire_at,
        "late_seconds": late,
        "upcoming": [] if problem or not count else schedules.fire_times(schedule, now, count),
        "problem": problem,
    }


def _unknown_ids(ids: Sequence[int]) -> list[int]:
    """Those of ``ids`` that no job has."""
    if not ids:
        return []
    known = set(Job.objects.using(_db()).filter(pk__in=list(ids)).values_list("pk", flat=True))
    return [job_id for job_id in ids if job_id not in known]


def _id_list(ids: Sequence[int]) -> str:
    return ", ".join(str(job_id) for job_id in ids)


def _retry_one(job: Job) -> str:
    transitions.retry(job, include_completed=True)
    return "will run again"


class LeftAlone(Exception):
    """A job the command leaves as it is unless an option says otherwise; the message
    says which option."""


#: What running a completed job again does, as the admin says it before it does it.
RUNS_AGAIN = "what each did the first time (a mail sent, a payment taken) happens again"


def _retry_unless_completed(job: Job) -> str:
    """The retry leaves a completed job alone itself (in its UPDATE): one that completed
    after it was read here is left alone too, and said to be."""
    try:
        if job.state != JobState.COMPLETED:
            transitions.retry(job, include_completed=False)
            return "will run again"
    except InvalidTransition:
        if job.state != JobState.COMPLETED:  # read again by the refused retry
            raise
    raise LeftAlone(
        "is completed: left alone; --include-completed runs it again, and what it did "
        "the first time (a mail sent, a payment taken) happens again"
    )


def _completed_among(selected: JobFilter) -> QuerySet[Job]:
    """The jobs ``selected`` that a retry would run again although they completed."""
    return transitions.can_be_retried(selected.jobs()).filter(state=JobState.COMPLETED)


def _completed_note(completed: Tally, include: bool) -> str:
    """What a retry's question adds about the completed jobs among those it matched."""
    if include:
        return f" {completed} of them completed and will run again: {RUNS_AGAIN}"
    return f" {completed} of them completed: left alone (--include-completed runs them again)"


def _cancel_one(job: Job) -> str:
    before = job.state
    transitions.cancel(job)
    # By what it is now: it may have finished between the read and the cancel.
    if before in FINISHED or job.state != JobState.CANCELLED:
        return f"had already finished ({job.state})"
    return "cancelled"


# -- small things -----------------------------------------------------------------------


def _adder(sub: Any, command: CommandParser) -> Callable[[str, str], CommandParser]:
    def add(name: str, help_text: str) -> CommandParser:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--json", action="store_true", help="Print one JSON document.")
        _django_options(command, parser)
        return parser

    return add


#: Django's options of every command (BaseCommand.create_parser), by their dest.
DJANGO_OPTIONS = (
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
)


def _django_options(command: CommandParser, parser: CommandParser) -> None:
    """Take Django's options after the subcommand too (`pgjobs health --settings
    mysite.prod`, as a probe is written), as every other command takes them anywhere:
    they were refused there, a usage error (exit 2). SUPPRESS as their default: a
    subcommand's defaults overwrite what was given before it."""
    for action in command._actions:  # argparse keeps no public list of them
        if action.dest not in DJANGO_OPTIONS:
            continue
        # A flag (store_true) takes no value; the others a value of their type.
        kind: dict[str, Any] = (
            {"action": "store_true"}
            if action.nargs == 0
            else {"type": action.type, "choices": action.choices}
        )
        parser.add_argument(
            *action.option_strings,
            dest=action.dest,
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
            **kind,
        )


def _filters(parser: CommandParser) -> None:
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        help="Job state (repeat or comma-separate for several).",
    )
    parser.add_argument("--queue", action="append", default=[], help="Queue name.")
    parser.add_argument("--task", action="append", default=[], help="Task dotted path.")
    parser.add_argument(
        "--since", default=None, help="Created since: ISO date/time, or a duration ago (2h)."
    )
    parser.add_argument("--before", default=None, help="Created before: as --since.")


def _newest(rows: QuerySet[Job]) -> list[Job]:
    """The rows, read within ``LIST_SECONDS`` and without parallel workers (they take the
    cores the queue's workers need), as the admin's job list reads its pages."""
    began = time.monotonic()
    try:
        with db.local_settings(
            _db(),
            statement_timeout=f"{LIST_SECONDS * 1000:.0f}ms",
            max_parallel_workers_per_gather="0",
        ):
            return list(rows)
    except OperationalError as error:
        took = time.monotonic() - began
        why = db.cut_short(error, took, LIST_SECONDS)
        if why is None:
            raise
        if why == db.CANCELLED:  # not slow: someone stopped it (pg_cancel_backend)
            raise CommandError(
                f"no jobs listed: the database cancelled the read after {took:.1f} s, "
                f"before its time limit of {LIST_SECONDS:g} s (an operator's "
                "pg_cancel_backend?); run it again",
                returncode=1,
            ) from None
        raise CommandError(
            f"no jobs listed: finding them took more than {LIST_SECONDS:g} s (no index serves "
            "--task, --since or --before alone); narrow the list with --state or --queue",
            returncode=1,
        ) from None


def _preview(querysets: list[QuerySet[Job]]) -> tuple[list[Tally], bool]:
    """``stats.tallies_within`` ``COUNT_SECONDS`` of ``querysets``, for the question
    before a change by filter, and True if they are estimates for want of time. A filter
    no index serves (``--task``, ``--before`` alone) counted every matching row with no
    limit (0.5 s at 600,000 jobs; seconds at millions) before the question was asked.
    The change itself has no time limit: a bulk write of millions of jobs is what it was
    asked for."""
    found = stats.tallies_within(querysets, COUNT_SECONDS)
    if found.cut_short == db.CANCELLED:
        raise CommandError(
            f"nothing done: the database cancelled counting the jobs after {found.took:.1f} s "
            "(an operator's pg_cancel_backend?); run it again",
            returncode=1,
        )
    return found.tallies, found.cut_short is not None


def _db() -> str:
    return conf.get("DATABASE")


def _seconds(delta: timedelta) -> float:
    return max(0.0, round(delta.total_seconds(), 3))


def _duration_or_none(text: str | None, what: str) -> timedelta | None:
    return None if text is None else _positive(text, what)


def _positive(text: str, what: str) -> timedelta:
    value = parse_duration(text, what)
    if value <= timedelta(0):
        raise InvalidSelection(f"{what} must be more than 0")
    return value


def _worker_state(worker: dict[str, Any]) -> str:
    state = "alive" if worker["alive"] else "STALE"
    if worker.get("failing"):  # its loop's passes or a queue's claims (failing.read)
        names = ", ".join(
            "its loop" if f["queue"] is None else repr(f["queue"]) for f in worker["failing"][:3]
        )
        more = len(worker["failing"]) - 3
        state += f", failing: {names}" + (f" and {more} more" if more > 0 else "")
    return state + (", stopping" if worker["stop_requested"] else "")


def _names(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _when(instant: datetime | None) -> str:
    """In TIME_ZONE, named: ``schedules`` prints each schedule's next fires in its own."""
    if instant is None:
        return ""
    return timezone.localtime(instant).strftime("%Y-%m-%d %H:%M:%S %Z")


def _plain(value: Any) -> str:
    if isinstance(value, datetime):
        return timezone.localtime(value).isoformat()
    return _printable("" if value is None else str(value))


def _stored_time(error: dict[str, Any]) -> Any:
    """An error record's ``at``, an ISO string in UTC, as a time: printed on TIME_ZONE
    as the job's own times are (they read 18:51+01:00, its attempts 17:50+00:00). One
    that is no aware ISO time (written by SQL) is printed as it is stored."""
    at = error.get("at")
    try:
        when = datetime.fromisoformat(at) if isinstance(at, str) else None
        if when is None or timezone.is_naive(when):
            return at
        return timezone.localtime(when).isoformat()
    except (ValueError, OverflowError):  # 9999-12-31T23:00Z is past year 9999 in Berlin
        return at


def _printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters escaped: a stored value can't drive the terminal."""
    if text.isprintable():
        return text
    kept = "\n" if keep_newlines else ""
    return "".join(c if c.isprintable() or c in kept else repr(c)[1:-1] for c in text)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _reader_gone() -> None:
    """``pgjobs show 42 | head``: the reader closed the pipe. Exit 1 without a
    traceback, and keep Python's exit-time flush of stdout from failing too."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)
