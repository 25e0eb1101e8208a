"""The job console: a changelist that stays fast at millions of rows, a detail page
with every attempt's traceback, and operator actions that go through ``transitions``."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import (
    IS_FACETS_VAR,
    IS_POPUP_VAR,
    TO_FIELD_VAR,
    IncorrectLookupParameters,
)
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import (
    ALL_VAR,
    ERROR_FLAG,
    ORDER_VAR,
    PAGE_VAR,
    SEARCH_VAR,
    ChangeList,
)
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Left
from django.db.models.lookups import Contains
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    QueryDict,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from .. import clocks, db, limits, shown, stats, transitions
from ..exceptions import JobGone, UniqueKeyConflict, UniqueKeyHeld
from ..models import Job, JobDependency
from ..states import FINISHED, RETRY_FROM, InvalidTransition, JobState
from ..templatetags.pgjobs_admin import clipped, elapsed, escaped, when
from .base import CheckedChangeList, OperatorAdmin, id_in_url, url_or_none
from .dashboard import DashboardViews, no_worker_warning
from .filters import QueueFilter, SnoozedFilter, StateFilter, TaskFilter
from .paginator import SCAN_SECONDS, EstimatingPaginator
from .timeline import timeline

S = JobState
#: Dependencies and dependents listed on a job's page; a pipeline can fan out to thousands.
LINKED_JOBS = 50


#: The job page's retry button, by state, where "Retry now" would mislead: a completed
#: job failed nothing (and runs again only once confirmed: the "…"), a scheduled one
#: never ran, nor did a cancelled one cancelled before its first attempt (one
#: cancelled after it runs again, at once).
RUN_AGAIN = "Run again…"
RETRY_LABELS = {S.COMPLETED: RUN_AGAIN, S.SCHEDULED: "Run now"}


def retry_label(job: Job) -> str:
    """The job page's retry button for ``job`` (``RETRY_LABELS``)."""
    if job.state == S.CANCELLED:
        return "Run again" if job.attempt else "Run now"
    return RETRY_LABELS.get(job.state, "Retry now")


#: Characters of a job's last error the list shows (the page shows all of it).
LAST_ERROR_CHARS = 200

#: Filters an index serves (pgjobs_job_claim, _executing and _state_queue_rest hold
#: every job by state and queue): under these alone the list counts, up to a cap.
INDEXED_FILTERS = frozenset({"state", "queue"})
#: Changelist parameters that filter nothing.
NOT_FILTERS = frozenset({PAGE_VAR, ORDER_VAR, ALL_VAR, ERROR_FLAG, TO_FIELD_VAR, IS_POPUP_VAR,
                         IS_FACETS_VAR})  # fmt: skip


class JobChangeList(CheckedChangeList):
    """The job list reads what it shows of each job on its page: the first characters
    of its last error, not the ``errors`` column (every attempt's traceback), not
    its ``result``, and its args, kwargs and meta only if small (``shown.listed``).
    Counting the rows reads none of them."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        paginator = self.paginator
        if isinstance(paginator, EstimatingPaginator) and paginator.page_ids is not None:
            # The paginator found this page's ids (bounded in time: not counted, or
            # past the first COUNT_CAP jobs); Django would scan again, without a LIMIT
            # if it fits one page, or without a time limit.
            if self.paginator.past_the_end:
                # Django refuses a page past a count; this count can't say where the end is.
                page = self.paginator.number
                raise IncorrectLookupParameters(f"page {page} is past the end of the list")
            self.result_list = self.paginator.shown(self.queryset)
        last_error = Left(KT("errors__-1__error"), LAST_ERROR_CHARS)
        self.result_list = shown.listed(
            self.result_list.defer("errors", "result").annotate(last_error=last_error)
        )


def _snoozed_note(job: Job) -> str:
    """``snoozed`` (``snoozed 3 times``) under the state of a job waiting after a snooze."""
    shown.read_listed(job)
    record = job.meta.get("snoozed") if isinstance(job.meta, dict) else None
    if not isinstance(record, dict) or job.state not in SnoozedFilter.WAITING:
        return ""
    count = record.get("count")
    times = f" {limits.shown(count, 20)} times" if count != 1 else ""
    note = f"snoozed{escaped(times)}"
    return SafeString(f'<div class="pgjobs-muted" data-pgjobs-snoozed>{note}</div>')


#: The jobs a retry leaves alone (by their states), said when a selection held any.
NOT_RETRIED = transitions.any_state(set(JobState) - RETRY_FROM)


class JobAdmin(OperatorAdmin):
    # Seven columns fit a 1280 px screen beside the admin's navigation and the
    # filters: the queue goes under the task, the attempt under the state, and one
    # time says what happened last (the job's page shows every time).
    list_display = (
        "id",
        "task_name",
        "state_badge",
        "args_preview",
        "last_error",
        "latest",
        "ran_for",
    )
    list_display_links = ("id", "task_name")
    list_filter = (StateFilter, QueueFilter, TaskFilter, SnoozedFilter)
    search_fields = ("task",)  # shows the search box; get_search_results does the work
    search_help_text = "A job id (finds that job), or text in the task name or the arguments."
    date_hierarchy = "created_at"
    sortable_by = ("id",)  # the one order an index serves on millions of rows
    paginator = EstimatingPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facets count every row: stats.tally instead
    list_per_page = 50
    actions = ("retry_jobs", "cancel_jobs", "delete_jobs")
    change_list_template = "admin/pgjobs/job/change_list.html"

    # -- what is shown -----------------------------------------------------------------

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return JobChangeList

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[Job],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> EstimatingPaginator:
        if queryset.model is not Job:  # the history page pages log entries with it
            return super().get_paginator(request, queryset, per_page, orphans,
                                         allow_empty_first_page)  # fmt: skip
        try:
            number = int(request.GET.get(PAGE_VAR, 1))
        except ValueError:
            number = 1
        is_counted = counted(request, queryset.db)
        # Unfiltered by state, the list's count is the sum of the tabs' (one statement
        # for all eight): a count of all jobs, or of a queue's, reads the table itself.
        # Uncounted, the tabs' estimates are the list's too: one EXPLAIN, not two.
        per_state = None
        if StateFilter.parameter_name not in request.GET:
            per_state = stats.state_tallies(queryset, counted=is_counted)
        return EstimatingPaginator(
            queryset, per_page, orphans, allow_empty_first_page,
            countable=is_counted, number=number, per_state=per_state,
        )  # fmt: skip

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Django says "Select job to change", but a job changes only through actions.
        extra_context = {"title": "Jobs", **(extra_context or {})}
        # A newcomer enqueues before starting any worker, and the job just sits: say why.
        if request.method == "GET" and (warning := no_worker_warning()):
            self.message_user(request, warning, messages.WARNING, fail_silently=True)
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and isinstance(context.get("cl"), ChangeList):
            cl = context["cl"]
            context.update(self._state_tabs(request, cl))
            if getattr(cl.paginator, "cut_short", False):
                self.message_user(request, _cut_short(cl.paginator), messages.WARNING)
        return response

    @admin.display(description="task")
    def task_name(self, job: Job) -> str:
        """The dotted path, breakable after each dot so that a long one wraps; its queue."""
        # f-strings and ``escaped``, not format_html, in every column: a page has 50 rows.
        path = escaped(job.task).replace(".", ".<wbr>")  # escaping writes no dot
        return SafeString(f'{path}<div class="pgjobs-muted">{escaped(job.queue)}</div>')

    @admin.display(description="state")
    def state_badge(self, job: Job) -> str:
        state = escaped(job.state)
        return SafeString(
            f'<span class="pgjobs-state pgjobs-{state}">{state}</span><div class="pgjobs-muted">'
            f"{escaped(job.attempt)}/{escaped(job.max_attempts)}</div>{_snoozed_note(job)}"
        )

    @admin.display(description="arguments")
    def args_preview(self, job: Job) -> str:
        # Whatever the row holds: args and kwargs of any JSON, or Unreadable text (or
        # too large to read for a list).
        if shown.read_listed(job) & {"args", "kwargs"}:
            return f"(over {shown.LISTED_BYTES:,} bytes: not listed)"
        args = job.args if isinstance(job.args, list) else [job.args]
        parts = [limits.shown(value, 40) for value in args[:5]]
        if isinstance(job.kwargs, dict):
            parts += [
                f"{key}={limits.shown(value, 40)}" for key, value in list(job.kwargs.items())[:5]
            ]
        else:
            parts.append(limits.shown(job.kwargs, 40))
        return clipped(", ".join(parts), 40)

    @admin.display(description="last error")
    def last_error(self, job: Job) -> str:
        error = getattr(job, "last_error", None) or ""
        first_line = next((line for line in error.splitlines() if line.strip()), "")
        if not first_line:
            return ""
        if job.state == S.COMPLETED:  # it failed before, then succeeded: no failure now
            first_line = f"earlier attempt: {first_line}"
            kind = "pgjobs-muted"
        else:
            kind = "pgjobs-error"
        return SafeString(
            f'<span class="{kind}" title="{escaped(first_line)}">'
            f"{escaped(clipped(first_line, 60))}</span>"
        )

    @admin.display(description="time")
    def latest(self, job: Job) -> str:
        """What happened last, or happens next: finished, started, due, or enqueued."""
        state = S(job.state)
        if state in FINISHED and job.finished_at:
            label, at = state.label.lower(), job.finished_at
        elif state == S.EXECUTING and job.attempted_at:
            label, at = "started", job.attempted_at
        elif state in (S.SCHEDULED, S.RETRYABLE):
            label, at = "due", job.run_at
        elif state == S.AVAILABLE:
            label, at = "available since", job.run_at
        else:
            label, at = "enqueued", job.created_at
        return SafeString(f'<div class="pgjobs-muted">{escaped(label)}</div>{when(at)}')

    @admin.display(description="duration")
    def ran_for(self, job: Job) -> str:
        """How long its last attempt ran (so far, while it executes)."""
        if job.attempted_at is None:
            return ""
        if job.state == S.EXECUTING:
            return elapsed((timezone.now() - job.attempted_at).total_seconds())
        if job.finished_at is None or job.finished_at < job.attempted_at:
            return ""
        return elapsed((job.finished_at - job.attempted_at).total_seconds())

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        """A number (or #number) finds that job by id, through the primary key.

        Other text is looked for in the task name (any case) and in the JSON of the
        arguments (exact case: a plain LIKE on the JSON text costs half of ILIKE).
        That is a scan of the table: nothing is counted (the tabs show the planner's
        estimates), and the scan for the page stops after ``SCAN_SECONDS``.
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        if "\x00" in term:  # as OperatorAdmin.get_search_results, which this replaces
            return queryset.none(), False
        job_id = searched_id(term)
        if job_id is not None:
            return queryset.filter(pk=job_id), False
        in_json = [Contains(Cast(field, TextField()), term) for field in ("args", "kwargs")]
        return queryset.filter(Q(task__icontains=term) | Q(in_json[0]) | Q(in_json[1])), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are enqueued by code, with validation the admin form can't give

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        if obj is not None and obj.state == S.EXECUTING:
            return False  # its worker still holds it: cancel first
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        transitions.delete_many(Job.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        transitions.delete_many(queryset)

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # action_location exists from Django 6.1 on; 5.2 calls get_actions(request).
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)
        # Django's version loads and lists every selected object; ours is one DELETE.
        actions.pop("delete_selected", None)
        return actions

    def _state_tabs(self, request: HttpRequest, cl: ChangeList) -> dict[str, Any]:
        """Tallies per state under the current filters other than state, as tabs."""
        others = cl.get_queryset(request, exclude_parameters=[StateFilter.parameter_name])
        # Under a filter no index serves, a capped count of a rare state would read
        # every row of a common one: the planner's estimates instead.
        is_counted = counted(request, others.db)
        tallies = getattr(cl.paginator, "per_state", None)
        current = request.GET.get(StateFilter.parameter_name)
        if tallies is None:
            # The list's count is its state's tab's, under the same filters: counted
            # once (at ten million jobs, up to COUNT_CAP index rows less a page).
            paginator = cl.paginator
            shared = is_counted and current in JobState.values
            known = {current: paginator.tally} if shared and paginator.countable else {}
            tallies = stats.state_tallies(others, counted=is_counted, known=known)
        tabs = [
            {
                "state": state.value,
                "label": state.label,
                "tally": tallies.get(state.value),
                "url": cl.get_query_string({StateFilter.parameter_name: state.value}, ["p"]),
                "selected": current == state.value,
            }
            for state in JobState
        ]
        return {
            "state_tabs": tabs,
            "all_states_url": cl.get_query_string(remove=[StateFilter.parameter_name, "p"]),
            "discarded_tally": tallies.get(S.DISCARDED.value),
            "counted": is_counted,
            "can_retry_discarded": self.has_change_permission(request),
            "filters_query": cl.get_query_string(remove=["p"]).removeprefix("?"),
        }

    # -- the detail page -----------------------------------------------------------------

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Job | None:
        """The job with no more than ``kept_errors.KEPT`` of its error records, however
        many its row holds, and each JSON value only within ``shown.limit()``: its page
        is read-only, and the object is never saved. None
        (the admin's "doesn't exist") for text that is no job id (``limits.id_in_text``):
        Django's to_python, int(), read " 1 " and "+1" as job 1."""
        job_id = limits.id_in_text(object_id)
        if job_id is None:
            return None
        queryset = shown.bounded(self.get_queryset(request))
        try:
            return shown.read(queryset.get(pk=job_id))
        except Job.DoesNotExist:
            return None

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """A read-only page: a job's fields change only through its actions."""
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        job = self.get_object(request, object_id)
        if job is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        can_change = self.has_change_permission(request, job)
        return self.render_page(
            request,
            "admin/pgjobs/job/detail.html",
            title=f"Job #{job.pk}",
            job=job,
            original=job,
            timeline=timeline(job),
            ran_for=self.ran_for(job),
            can_retry=can_change and job.state in RETRY_FROM,
            retry_label=retry_label(job),
            can_cancel=can_change and job.state not in FINISHED,
            can_delete=self.has_delete_permission(request, job) and job.state != S.EXECUTING,
            worker_url=self._worker_url(job),
            # Of each linked job what is shown: 50 with results of 1 MB were 50 MB read.
            waits_for=JobDependency.objects.filter(job=job)
            .select_related("depends_on")
            .only("job_id", "depends_on__task", "depends_on__state")
            .order_by("depends_on_id")[:LINKED_JOBS],
            needed_by=JobDependency.objects.filter(depends_on=job)
            .select_related("job")
            .only("depends_on_id", "job__task", "job__state")
            .order_by("job_id")[:LINKED_JOBS],
            queue_url=url_or_none("admin:pgjobs_queue_change", quote(job.queue)),
            has_view_permission=True,
        )

    def _worker_url(self, job: Job) -> str | None:
        if job.worker_id is None or job.state != S.EXECUTING:
            return None
        return reverse("admin:pgjobs_workerprocess_change", args=[job.worker_id])

    # -- operator actions: one job -------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        dashboard = DashboardViews(self)
        own = [
            # str, read by job_id_in_url: int read "01" as job 1.
            path("<str:job_id>/retry/", self.operator_view(self.retry_view, "change"),
                 name="pgjobs_job_retry"),
            path("<str:job_id>/cancel/", self.operator_view(self.cancel_view, "change"),
                 name="pgjobs_job_cancel"),
            path("retry-discarded/", self.operator_view(self.retry_discarded_view, "change"),
                 name="pgjobs_job_retry_discarded"),
            path("dashboard/", self.reader_view(dashboard.page), name="pgjobs_dashboard"),
            path("dashboard/data/", self.reader_view(dashboard.data),
                 name="pgjobs_dashboard_data"),
        ]  # fmt: skip
        return own + super().get_urls()

    def retry_view(self, request: HttpRequest, job_id: str) -> HttpResponse:
        pk = job_id_in_url(job_id)
        job = self._acted_on(request, pk)
        if job is None:
            return self.gone(request, JobGone(pk, JobState.AVAILABLE))
        # A completed job runs again only once confirmed, and only the completion the
        # question showed: the "yes" carries its time (``completed_by``).
        completed_by = answered_yes(request)
        if job.state == S.COMPLETED and completed_by is None:
            return self.run_again_confirmation(request, job)
        label = retry_label(job)
        try:
            transitions.retry(job, include_completed=completed_by or False)
        except JobGone as gone:
            return self.gone(request, gone)
        except UniqueKeyHeld as held:
            # None: the holder finished before it was read, or (REPEATABLE READ) it was
            # committed after the request's snapshot, which can't read it.
            holder = (
                "an active job this request can't see yet; try again to see which, then "
                "cancel that job,"
                if held.holder_id is None
                else f"active job #{held.holder_id}; cancel that job,"
            )
            self.message_user(
                request,
                f"Job #{job.pk} can't be retried now: its unique_key "
                f"{limits.shown(held.key, 300)} is held by {holder} or "
                "retry this one once it has finished.",
                messages.ERROR,
            )
        except InvalidTransition:
            if job.state == S.COMPLETED and completed_by is None:
                return self.run_again_confirmation(request, job)  # it completed meanwhile
            if job.state == S.COMPLETED:
                self.message_user(
                    request,
                    f"Job #{job.pk} completed after you were asked; left alone — choose "
                    f"“{RUN_AGAIN}” to re-run it.",
                    messages.WARNING,
                )
                return HttpResponseRedirect(reverse("admin:pgjobs_job_change", args=[job.pk]))
            if job.attempt >= transitions.ATTEMPT_LIMIT:
                why = f"it has had {job.attempt:,} attempts, the most its counter holds"
            else:
                why = f"it is {job.state}"
            self.message_user(request, f"Job #{job.pk} can't be retried now: {why}.",
                              messages.ERROR)  # fmt: skip
        else:
            when = "now" if label == "Run now" else "again"  # it never ran: not "again"
            self.message_user(request, f"Job #{job.pk} will run {when}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:pgjobs_job_change", args=[job.pk]))

    def run_again_confirmation(self, request: HttpRequest, job: Job) -> HttpResponse:
        """Ask before a completed job runs again: its task repeats what it did (a mail).
        The "yes" carries the time of the completion asked about: the job runs again
        only if it has not completed again since (someone else ran it meanwhile)."""
        return self.render_page(
            request,
            "admin/pgjobs/job/run_again_confirmation.html",
            title=f"Run job #{job.pk} again?",
            job=job,
            job_label=f"Job #{job.pk}",
            job_url=reverse("admin:pgjobs_job_change", args=[job.pk]),
            completed_by=(job.finished_at or clocks.database_now(job._state.db)).isoformat(),
        )

    def cancel_view(self, request: HttpRequest, job_id: str) -> HttpResponse:
        pk = job_id_in_url(job_id)
        job = self._acted_on(request, pk)
        if job is None:
            return self.gone(request, JobGone(pk, JobState.CANCELLED))
        before = job.state
        try:
            transitions.cancel(job)
        except JobGone as gone:
            return self.gone(request, gone)
        except InvalidTransition:
            self.message_user(request, f"Job #{job.pk} could not be cancelled.", messages.ERROR)
        else:
            # By what it is now: a worker may have finished it since the page was shown.
            if before in FINISHED or job.state != JobState.CANCELLED:
                self.message_user(request, f"Job #{job.pk} had already finished ({job.state}).",
                                  messages.WARNING)  # fmt: skip
            else:
                self.message_user(request, f"Job #{job.pk} cancelled.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:pgjobs_job_change", args=[job.pk]))

    def _acted_on(self, request: HttpRequest, pk: int) -> Job | None:
        """The job a retry or cancel acts on, without its JSON values (read again after
        the change, as transitions do): a row written by SQL may hold 255 MB in each."""
        return self.get_queryset(request).defer(*shown.FIELDS, "errors").filter(pk=pk).first()

    def gone(self, request: HttpRequest, gone: JobGone) -> HttpResponse:
        """A job deleted or pruned since its page was shown: say so, on the list (its
        own page would only say it does not exist)."""
        self.message_user(
            request,
            f"Job #{gone.job_id} no longer exists (it was deleted or pruned); nothing changed.",
            messages.ERROR,
        )
        return HttpResponseRedirect(reverse("admin:pgjobs_job_changelist"))

    def retry_discarded_view(self, request: HttpRequest) -> HttpResponse:
        """Retry every discarded job matching the changelist's filters, in one UPDATE."""
        filters = request.POST.get("filters", "")
        listing = copy.copy(request)
        listing.GET = QueryDict(filters)
        listing.method = "GET"
        changelist = reverse("admin:pgjobs_job_changelist")
        try:
            cl = self.get_changelist_instance(listing)
            others = cl.get_queryset(listing, exclude_parameters=[StateFilter.parameter_name])
        except IncorrectLookupParameters:  # get_changelist_instance said why
            self.message_user(request, "Nothing retried.", messages.ERROR)
            return HttpResponseRedirect(changelist)
        try:
            retried = transitions.retry_many(others.filter(state=S.DISCARDED))
        except UniqueKeyConflict as conflict:
            self.message_user(request, _key_out_of_sight(conflict), messages.ERROR)
            return HttpResponseRedirect(f"{changelist}?{filters}" if filters else changelist)
        self.message_user(request, f"{retried:,} discarded job(s) will run again.",
                          messages.SUCCESS)  # fmt: skip
        self.say_key_held(request, others.filter(state=S.DISCARDED), include_completed=False)
        return HttpResponseRedirect(f"{changelist}?{filters}" if filters else changelist)

    # -- operator actions: many jobs -------------------------------------------------------

    @admin.action(description="Retry selected jobs", permissions=["change"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        """At once, unless completed jobs are among them: as from a completed job's page,
        they run again only once confirmed (their task repeats what it did: a mail).

        The question's "yes" carries when it was asked (``completed_by``), and the
        UPDATE runs again only the jobs completed by then: one that completed since
        was not counted in the question, and is left alone (and said to be). The
        selection itself is posted back as it came (the ticked ids, or "select all"
        under the list's filters), not as the ids of the jobs counted."""
        completed_by = answered_yes(request)
        if completed_by is None:
            # Before the count: a job completing after it is left alone. By the database's
            # clock, near the workers' that stamp completions: a web host's ahead re-ran
            # jobs completed after the question, unasked; one behind, none asked about.
            asked_at = clocks.database_now(queryset.db)
            completed = transitions.can_be_retried(queryset).filter(state=S.COMPLETED)
            if completed.exists():
                return self.retry_jobs_confirmation(request, queryset, completed, asked_at)
        # Before the UPDATE, whose jobs become available. One EXISTS, not a count of a
        # select-all of millions; its states ORed, not IN: PostgreSQL then reads each
        # state's partial index (an IN read the whole table under a task filter).
        left_alone = queryset.order_by().filter(NOT_RETRIED).exists()
        try:
            retried = transitions.retry_many(queryset, include_completed=completed_by or False)
        except UniqueKeyConflict as conflict:  # the transaction is still usable
            self.message_user(request, _key_out_of_sight(conflict), messages.ERROR)
            return None
        self.message_user(
            request,
            f"{retried:,} job(s) will run again."
            + (" Executing, waiting and available jobs were left alone." if left_alone else ""),
            messages.SUCCESS,
        )
        self.say_key_held(request, queryset, include_completed=completed_by or False)
        # Completed since the question, or (none asked about) since the check above.
        late = transitions.can_be_retried(queryset).filter(state=S.COMPLETED)
        if completed_by is not None:
            late = late.filter(finished_at__gt=completed_by)
        if late.exists():
            when = "after you were asked" if completed_by is not None else "meanwhile"
            self.message_user(
                request,
                f"{stats.tally(late)} job(s) completed {when}; left alone — select them "
                "again to re-run.",
                messages.WARNING,
            )
        return None

    def say_key_held(
        self, request: HttpRequest, jobs: QuerySet[Job], include_completed: bool | datetime
    ) -> None:
        """Name the jobs a retry left as they were because their unique_key is held."""
        ids, count = transitions.key_held_ids(jobs, include_completed=include_completed)
        if not ids:
            return
        more = f" and {count - len(ids):,} more" if count > len(ids) else ""
        named = ", ".join(f"#{pk}" for pk in ids)
        self.message_user(
            request,
            f"{count:,} job(s) {transitions.KEY_HELD_SAID}: {named}{more}.",
            messages.WARNING,
        )

    def retry_jobs_confirmation(
        self,
        request: HttpRequest,
        queryset: QuerySet[Job],
        completed: QuerySet[Job],
        asked_at: datetime,
    ) -> HttpResponse | None:
        """How many of the selection would be retried, how many of those completed, and
        what running them again does, in the words of a completed job's page.

        Counted within ``stats.COUNT_SECONDS``, as ``pgjobs retry`` by filter counts
        before its question: a select-all under a filter no index serves (a task) read
        every row with no limit. Past it the page gives the planner's estimates and
        says so; a count an operator cancels retries nothing, and says so."""
        seconds = stats.COUNT_SECONDS
        found = stats.tallies_within([transitions.can_be_retried(queryset), completed], seconds)
        if found.cut_short == db.CANCELLED:
            self.message_user(
                request,
                f"Nothing retried: the database cancelled counting the jobs after "
                f"{found.took:.1f} s (an operator's pg_cancel_backend?). Try again.",
                messages.ERROR,
            )
            return None
        retried, completed_tally = found.tallies
        return self.render_page(
            request,
            "admin/pgjobs/job/retry_confirmation.html",
            title="Run completed jobs again?",
            retried=retried,
            completed=completed_tally,
            estimated_after=f"{seconds:g}" if found.cut_short else None,
            completed_by=asked_at.isoformat(),
            post=request.POST,
            selected=request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
        )

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        cancelled = transitions.cancel_many(queryset)
        self.message_user(
            request,
            f"{cancelled:,} job(s) cancelled. Finished jobs were left alone.",
            messages.SUCCESS,
        )

    @admin.action(description="Delete selected jobs", permissions=["delete"])
    def delete_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        """Ask once, then delete with one statement. Executing jobs are kept: cancel first."""
        deletable = queryset.exclude(state=S.EXECUTING)
        if request.POST.get("confirmed") != "yes":
            return TemplateResponse(
                request,
                "admin/pgjobs/job/delete_confirmation.html",
                self.operator_context(
                    request,
                    title="Delete jobs?",
                    tally=stats.tally(deletable),
                    post=request.POST,
                    selected=request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
                ),
            )
        deleted = transitions.delete_many(queryset)
        self.message_user(
            request,
            f"{deleted:,} job(s) deleted. Executing jobs were kept: cancel them first.",
            messages.SUCCESS,
        )
        return None


def _cut_short(paginator: EstimatingPaginator) -> str:
    """Why the list shows no jobs after its time limit, and what to do instead; or
    that an operator cancelled the scan (it was not slow: the limit had not run out)."""
    if paginator.cancelled:
        return (
            "No jobs shown: the database cancelled finding them (an operator's "
            "pg_cancel_backend, or the server's administrator) before their time limit "
            f"of {SCAN_SECONDS} s. Reload the page to try again."
        )
    if paginator.countable:  # an index serves the filters: the page was too deep
        return (
            f"No jobs shown: page {paginator.number:,} starts after {paginator.start:,} jobs, "
            f"and reading that far took more than {SCAN_SECONDS} s. Sort by id ascending "
            "(the id column's header) to start from the oldest jobs."
        )
    return (
        f"No jobs shown: finding them took more than {SCAN_SECONDS} s, because no "
        "index serves this filter. Narrow it by state or queue (or search by id)."
    )


def _key_out_of_sight(conflict: UniqueKeyConflict) -> str:
    """What a bulk retry says when its UPDATE kept being refused a unique_key held by a
    job its transaction can't see (``retry_many``'s UniqueKeyConflict: under
    ATOMIC_REQUESTS at REPEATABLE READ, one committed after the request began)."""
    which = (
        f"unique_key {limits.shown(conflict.key, 300)} of queue {limits.shown(conflict.queue)}"
        if conflict.key is not None
        else "a unique_key"
    )
    isolation = conflict.isolation.upper() if conflict.isolation else ""
    if isolation and isolation != "READ COMMITTED":
        why = (
            f"was taken by a job committed after this request began, which its "
            f"{isolation} transaction can't see"
        )
    else:
        why = "was taken by jobs that kept finishing before they could be read"
    return (
        f"Nothing retried: {which} {why}. Try again: the retry then leaves the jobs "
        "whose key is held as they were."
    )


def answered_yes(request: HttpRequest) -> datetime | None:
    """The "yes" of a question about running completed jobs again: the time it was
    asked (the last completion it counted), which its form carries as
    ``completed_by``. None for no "yes", or one without a time (a page of an earlier
    release, a hand-made POST), or with no time PostgreSQL takes: then ask again."""
    if request.POST.get("confirmed") != "yes":
        return None
    try:
        at = datetime.fromisoformat(request.POST.get("completed_by", ""))
        if at.tzinfo is None:
            return None
        at = at.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return at if limits.EARLIEST <= at < limits.END else None  # a time the database takes


def counted(request: HttpRequest, using: str) -> bool:
    """Whether the list is counted: its filters are ones an index serves (``countable``),
    or the job table is so small (``stats.few_jobs``) that counting under any filter
    reads little. Asked once a request."""
    if countable(request):
        return True
    few = getattr(request, "_pgjobs_few_jobs", None)
    if few is None:
        few = stats.few_jobs(using)
        request._pgjobs_few_jobs = few  # type: ignore[attr-defined]
    return few


def countable(request: HttpRequest) -> bool:
    """Whether the list's filters are ones an index serves (state, queue, a search by
    id): then counting them up to a cap reads at most that many index entries."""
    for name, value in request.GET.items():
        if name == SEARCH_VAR:
            term = value.strip()
            if term and searched_id(term) is None:
                return False
        elif name not in INDEXED_FILTERS and name not in NOT_FILTERS:
            return False
    return True


def job_id_in_url(text: str) -> int:
    """The job id an action's URL names; else 404 (``base.id_in_url``)."""
    return id_in_url(text, "job")


def searched_id(term: str) -> int | None:
    """The job id a search term names (``42``, ``#42``; ``limits.id_in_text``), or None."""
    return limits.id_in_text(term.removeprefix("#"))
