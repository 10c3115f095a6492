"""End-user pages: projects, the launch form, the run list and the live run page.

Views are thin: visibility and reads go through `runs.selectors`, launching through
`runs.services.run_launch`. Domain errors become HTTP here: NotFound -> 404 (outsiders never learn
that something exists), Forbidden -> 403, any other ApplicationError -> 400 with its message.
A view renders the full page, or only a `partials/` fragment when htmx asks for it; the live
poll of the run page reuses the same partials as the page itself. The run controls' POST
views are in `runs.control_views`; which controls the page shows is decided here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, F, OuterRef, Q, Subquery, Sum, Window
from django.db.models.functions import RowNumber
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from runs import selectors
from runs.errors import ApplicationError, Conflict, Forbidden, InvalidInput, NotFound
from runs.forms import (
    REASON_MAX_LENGTH,
    launch_values,
    nul_errors,
    param_fields,
    prefill_values,
    run_filters_parse,
)
from runs.models import (
    Execution,
    ExecutionStatus,
    LogChunk,
    LogStream,
    Membership,
    Role,
    Run,
    RunStatus,
    Task,
    Trigger,
)
from runs.params import params_validate
from runs.services import run_launch
from runs.transitions import Actor

RECENT_RUNS = 10
RUN_PAGE = 50
# The run page shows the end of each execution's output; the whole log is a download away.
LOG_TAIL_CHUNKS = 200
LOG_TAIL_LINES = 2000
# One poll sends at most this much per execution; a poll that hits the bound polls again even
# after the run ended, so a fast finisher's last lines are never cut off.
LIVE_CHUNKS = 200
LIVE_EVENTS = 500
FULL_EVENTS = 1000
# Cursor values travel in query strings; bound them so the database never sees an int it cannot
# hold (SQLite and PostgreSQL both fail on integers past 64 bits, as a 500).
MAX_CURSOR = 2**31 - 1
MAX_ID = 2**63 - 1

View = Callable[..., HttpResponseBase]


# --- plumbing ----------------------------------------------------------------------------------


def page(view: View) -> View:
    """Login required (htmx-aware) and domain errors mapped to HTTP.

    An htmx poll whose session expired would follow the login redirect and swap the login page
    into the middle of the run page; tell htmx to send the whole window to login instead.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            current = request.htmx.current_url_abs_path if request.htmx else None
            target = current or request.get_full_path()
            login = f"{reverse(settings.LOGIN_URL)}?{urlencode({'next': target})}"
            return HttpResponseClientRedirect(login) if request.htmx else redirect(login)
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from None
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from None

    return wrapper


def actor_for(request: HttpRequest) -> Actor:
    """The Actor for audit rows of page actions: the user, via ui, with address and agent."""
    return Actor(
        user=request.user,
        via="ui",
        label=request.user.get_username(),
        # Some servers leave REMOTE_ADDR empty, which an inet column rejects: store no address.
        ip_address=request.META.get("REMOTE_ADDR") or None,
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
    )


def bounded_int(value: str | None, name: str, *, default: int = 0, maximum: int = MAX_CURSOR
                ) -> int:
    """A non-negative integer query parameter; ApplicationError (400) for anything else."""
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 19 or int(value) > maximum:
        raise ApplicationError(
            f"{name} must be a whole number from 0 to {maximum}; reload the page to start over."
        )
    return int(value)


def cursor_checked(cursor: str | None) -> str | None:
    """The cursor if it decodes to an id the database can compare with, else ApplicationError."""
    if not cursor:
        return None
    after = selectors.cursor_decode(cursor)
    if after is not None and after > MAX_ID:
        raise ApplicationError(
            "The cursor is not valid; use the Older runs link, or start from the newest runs."
        )
    return cursor


def duration_text(value: timedelta | None) -> str:
    """'42 s', '3 min 5 s', '2 h 4 min', '3 d 2 h': precise where it matters, short where not."""
    if value is None:
        return ""
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    # The two largest units, leaving out a zero second one ("1 h", not "1 h 0 min").
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s")]
    while parts[0][0] == 0:
        parts.pop(0)
    shown = [f"{n} {unit}" for n, unit in parts[:2] if n]
    return " ".join(shown)


def rows_requested(request: HttpRequest) -> bool:
    """True when htmx polls for the rows of a run table (the tbody swaps itself)."""
    return bool(request.htmx) and request.htmx.target == "run-rows"


def any_live(runs: list[Run]) -> bool:
    return any(not run.is_terminal for run in runs)


# --- projects ----------------------------------------------------------------------------------


@require_GET
@page
def home(request: HttpRequest) -> HttpResponse:
    """The projects the user can see, with task counts and their role, and the latest runs."""
    user = request.user
    own_role = Membership.objects.filter(project=OuterRef("pk"), user=user).values("role")[:1]
    projects = list(
        selectors.projects_for_user(user)
        .annotate(task_count=Count("tasks", distinct=True), own_role=Subquery(own_role))
        .order_by("name")
    )
    for project in projects:
        # As in selectors.role_of: staff act as maintainers everywhere, member or not.
        project.role_label = Role(Role.MAINTAINER if user.is_staff else project.own_role).label
    runs, _ = selectors.runs_list(user, filters=selectors.RunFilters(), limit=RECENT_RUNS)
    context = {"runs": runs, "show_project": True, "poll_url": request.get_full_path(),
               "live_rows": any_live(runs)}
    if rows_requested(request):
        return render(request, "runs/partials/run_rows.html", context)
    return render(request, "runs/home.html", {**context, "projects": projects, "nav": "projects"})


@require_GET
@page
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """A project's tasks (with Launch for operators) and its latest runs."""
    project = selectors.project_get(request.user, slug)
    runs, _ = selectors.runs_list(
        request.user, filters=selectors.RunFilters(project=project.slug), limit=RECENT_RUNS
    )
    context = {"runs": runs, "show_project": False, "poll_url": request.get_full_path(),
               "live_rows": any_live(runs)}
    if rows_requested(request):
        return render(request, "runs/partials/run_rows.html", context)
    role = selectors.role_of(request.user, project)
    task_list = list(selectors.tasks_for_project(project))
    return render(
        request,
        "runs/project_detail.html",
        {
            **context,
            "project": project,
            "tasks": task_list,
            "role": Role(role).label if role else "",
            "can_launch": role is not None and Role.rank(role) >= Role.rank(Role.OPERATOR),
            "nav": "projects",
        },
    )


# --- launch ------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@page
def task_launch(request: HttpRequest, slug: str, task_slug: str) -> HttpResponseBase:
    """The launch form generated from the task's parameter schema.

    Viewers see the task and its parameters read-only; POST needs the operator role (403).
    """
    if request.method == "POST":
        task = selectors.task_get(request.user, slug, task_slug, minimum=Role.OPERATOR)
        return _launch_post(request, task)
    task = selectors.task_get(request.user, slug, task_slug)
    values = prefill_values(task.params_schema, request.GET)
    return _launch_render(request, task, fields=param_fields(task.params_schema, values=values))


def _launch_post(request: HttpRequest, task: Task) -> HttpResponseBase:
    schema = task.params_schema
    values = launch_values(schema, request.POST)
    refused = nul_errors(values)
    if refused:
        # Show every problem at once: validate the rest as run_launch would.
        _clean, others = params_validate(
            schema, {k: v for k, v in values.items() if k not in refused}, from_form=True
        )
        fields = param_fields(schema, values=values, errors={**others, **refused})
        return _launch_render(request, task, fields=fields, status=422,
                              error="Some parameters are invalid; see the errors per field.")
    try:
        run, _created = run_launch(
            task=task, raw_params=values, actor=actor_for(request), trigger=Trigger.UI,
            from_form=True,
        )
    except InvalidInput as exc:
        known = {d["name"] for d in schema}
        fields = param_fields(schema, values=values, errors=exc.fields)
        general = [f"{name}: {'; '.join(msgs)}" for name, msgs in exc.fields.items()
                   if name not in known]
        return _launch_render(request, task, fields=fields, status=422, error=exc.message,
                              general_errors=general)
    except Conflict as exc:
        fields = param_fields(schema, values=values)
        return _launch_render(request, task, fields=fields, status=409, error=exc.message)
    messages.success(request, f"Run #{run.pk} of {task.name} launched.")
    return redirect(run)


def _launch_render(
    request: HttpRequest,
    task: Task,
    *,
    fields: list,
    status: int = 200,
    error: str = "",
    general_errors: list[str] | None = None,
) -> HttpResponse:
    role = selectors.role_of(request.user, task.project)
    can_launch = role is not None and Role.rank(role) >= Role.rank(Role.OPERATOR)
    runs, _ = selectors.runs_list(
        request.user,
        filters=selectors.RunFilters(project=task.project.slug, task=task.slug),
        limit=5,
    )
    return render(
        request,
        "runs/task_launch.html",
        {
            "task": task,
            "project": task.project,
            "fields": fields,
            "error": error,
            "general_errors": general_errors or [],
            "can_launch": can_launch,
            "role": Role(role).label if role else "",
            "runs": runs,
            "show_project": False,
            "timeout": duration_text(timedelta(seconds=task.timeout_seconds)),
            "nav": "projects",
        },
        status=status,
    )


# --- run list ----------------------------------------------------------------------------------


@require_GET
@page
def run_list(request: HttpRequest) -> HttpResponse:
    """Runs the user can see, filtered, newest first, one keyset page at a time.

    While a listed run is still going, the table body re-fetches itself every 2 s.
    """
    filters, raw, filter_errors = run_filters_parse(request.GET)
    cursor = request.GET.get("cursor", "").strip()
    runs: list[Run] = []
    next_cursor = None
    error = ""
    try:
        if filter_errors:
            raise InvalidInput("Some filters are invalid; fix them or clear the filters.",
                               fields=filter_errors)
        runs, next_cursor = selectors.runs_list(
            request.user, filters=filters, cursor=cursor_checked(cursor), limit=RUN_PAGE
        )
    except ApplicationError as exc:  # bad cursor or filters: the client's to fix, so 400
        error = exc.message
        filter_errors = exc.fields or filter_errors
    status = 400 if error else 200
    context = {"runs": runs, "show_project": True, "poll_url": request.get_full_path(),
               "live_rows": any_live(runs)}
    if rows_requested(request) and not error:
        return render(request, "runs/partials/run_rows.html", context)

    projects = list(selectors.projects_for_user(request.user).order_by("name"))
    tasks = (
        Task.objects.filter(project__in=selectors.projects_for_user(request.user))
        .order_by("name")
        .values_list("slug", "name")
        .distinct()
    )
    query = {name: value for name, value in raw.items() if value}
    return render(
        request,
        "runs/run_list.html",
        {
            **context,
            "error": error,
            "filter_errors": filter_errors,
            "values": raw,
            "projects": [(p.slug, p.name) for p in projects],
            "tasks": list(tasks),
            "statuses": RunStatus.choices,
            "triggers": Trigger.choices,
            "status_counts": [] if error else _status_counts(request, filters, query),
            "filtered": bool(query),
            "paged": bool(cursor),
            "newest_url": _url("run_list", query),
            "older_url": _url("run_list", {**query, "cursor": next_cursor}) if next_cursor
            else "",
            "nav": "runs",
        },
        status=status,
    )


def _url(name: str, query: dict[str, str]) -> str:
    return reverse(name) + (f"?{urlencode(query)}" if query else "")


def _status_counts(
    request: HttpRequest, filters: selectors.RunFilters, query: dict[str, str]
) -> list[dict]:
    """Runs per status under the other filters, as links that add the status filter.

    One grouped COUNT over the runs of the projects the user can see (the visibility rule
    comes from selectors.projects_for_user, not repeated here).
    """
    qs = Run.objects.filter(project__in=selectors.projects_for_user(request.user))
    if filters.project:
        qs = qs.filter(project__slug=filters.project)
    if filters.task:
        qs = qs.filter(task__slug=filters.task)
    if filters.trigger:
        qs = qs.filter(trigger=filters.trigger)
    counts = dict(qs.order_by().values_list("status").annotate(n=Count("id")))
    chips = []
    for value, label in RunStatus.choices:
        if not counts.get(value) and filters.status != value:
            continue
        active = filters.status == value
        rest = {k: v for k, v in query.items() if k != "status"}
        chips.append(
            {
                "status": value,
                "label": label,
                "count": counts.get(value, 0),
                "active": active,
                # A second click on the active chip removes the filter.
                "url": _url("run_list", rest if active else {**rest, "status": value}),
            }
        )
    return chips


# --- run detail and its live poll ----------------------------------------------------------------


@dataclass
class LogBlock:
    """Consecutive lines of one stream, as rendered (a LogChunk, or the tail of one)."""

    seq: int
    stream: str
    lines: list[str]


@dataclass
class LogTail:
    blocks: list[LogBlock] = field(default_factory=list)
    hidden_lines: int = 0
    last_seq: int = 0


@dataclass
class ExecutionView:
    execution: Execution
    duration: str
    result_json: str
    log: LogTail


def _block(chunk: LogChunk) -> LogBlock:
    return LogBlock(seq=chunk.seq, stream=chunk.stream, lines=chunk.text.split("\n"))


def _log_tails(executions: list[Execution]) -> dict[int, LogTail]:
    """The last lines of every execution's output in one query (not one per execution).

    Window functions number each execution's chunks from the end and sum its lines, so the page
    can say how much earlier output it left out.
    """
    tails = {e.pk: LogTail() for e in executions}
    if not executions:
        return tails
    chunks = (
        LogChunk.objects.filter(execution_id__in=list(tails))
        .annotate(
            from_end=Window(RowNumber(), partition_by=[F("execution_id")],
                            order_by=F("seq").desc()),
            total_lines=Window(Sum("line_count"), partition_by=[F("execution_id")]),
        )
        .filter(from_end__lte=LOG_TAIL_CHUNKS)
        .order_by("execution_id", "-seq")
    )
    shown: dict[int, int] = {}
    totals: dict[int, int] = {}
    for chunk in chunks:  # newest first per execution
        tail = tails[chunk.execution_id]
        totals[chunk.execution_id] = chunk.total_lines or 0
        tail.last_seq = max(tail.last_seq, chunk.seq)
        room = LOG_TAIL_LINES - shown.get(chunk.execution_id, 0)
        if room <= 0:
            continue
        block = _block(chunk)
        block.lines = block.lines[-room:]
        shown[chunk.execution_id] = shown.get(chunk.execution_id, 0) + len(block.lines)
        tail.blocks.insert(0, block)
    for execution_id, tail in tails.items():
        tail.hidden_lines = max(0, totals.get(execution_id, 0) - shown.get(execution_id, 0))
    return tails


def _logs_after(cursors: dict[int, int]) -> dict[int, LogTail]:
    """New chunks of several executions after per-execution cursors, in one query, at most
    LIVE_CHUNKS per execution (the next poll fetches the rest)."""
    tails = {execution_id: LogTail(last_seq=after) for execution_id, after in cursors.items()}
    if not cursors:
        return tails
    condition = Q()
    for execution_id, after in cursors.items():
        condition |= Q(execution_id=execution_id, seq__gt=after)
    chunks = (
        LogChunk.objects.filter(condition)
        .annotate(n=Window(RowNumber(), partition_by=[F("execution_id")], order_by=F("seq").asc()))
        .filter(n__lte=LIVE_CHUNKS)
        .order_by("execution_id", "seq")
    )
    for chunk in chunks:
        tail = tails[chunk.execution_id]
        tail.blocks.append(_block(chunk))
        tail.last_seq = chunk.seq
    return tails


def _execution_view(execution: Execution, log: LogTail, now) -> ExecutionView:
    duration = None
    if execution.started_at:
        duration = (execution.finished_at or now) - execution.started_at
    result = ""
    if execution.result is not None:
        result = json.dumps(execution.result, indent=2, ensure_ascii=False, sort_keys=False)
    return ExecutionView(
        execution=execution, duration=duration_text(duration), result_json=result, log=log
    )


@dataclass(frozen=True)
class RunControls:
    """Which run controls the page offers this user right now.

    `state` names what is shown. The page sends it back with every poll and the poll re-sends
    the controls only when it changed: replacing them every second would wipe a cancel reason
    while it is being typed and move keyboard focus.
    """

    allowed: bool = False  # operator or above: may control this run at all
    pause: bool = False
    resume: bool = False
    cancel: bool = False
    stopping: bool = False  # every execution left has been asked to stop; nothing to add
    reason_max_length = REASON_MAX_LENGTH  # for the cancel form's maxlength

    @property
    def state(self) -> str:
        shown = [name for name in ("pause", "resume", "cancel", "stopping") if getattr(self, name)]
        return "-".join(shown) or "none"

    @property
    def visible(self) -> bool:
        return self.state != "none"


def run_controls(run: Run, executions: list[Execution], role: str | None) -> RunControls:
    """The controls for a user with `role`, from the run and its already loaded executions."""
    if role is None or Role.rank(role) < Role.rank(Role.OPERATOR):
        return RunControls()
    if run.is_terminal:
        return RunControls(allowed=True)
    left = [e for e in executions if not e.is_terminal]
    # A second cancel would only repeat the stop requests, so show that they are pending.
    stopping = bool(left) and all(
        e.status == ExecutionStatus.RUNNING and e.cancel_requested_at for e in left
    )
    if stopping:
        return RunControls(allowed=True, stopping=True)
    return RunControls(
        allowed=True,
        pause=run.status in (RunStatus.QUEUED, RunStatus.RUNNING),
        resume=run.status == RunStatus.PAUSED,
        cancel=True,
    )


def _run_context(request: HttpRequest, run: Run, executions: list[Execution]) -> dict[str, Any]:
    """What the run header and controls show; shared by the page and every live poll."""
    role = selectors.role_of(request.user, run.project)
    schema = run.task_snapshot.get("params_schema", [])
    secret = {d.get("name") for d in schema if d.get("type") == "secret"}
    again = {
        name: ("true" if value is True else "" if value is False else str(value))
        for name, value in run.params.items()
        if name not in secret
    }
    can_launch = role is not None and Role.rank(role) >= Role.rank(Role.OPERATOR)
    relaunch_url = ""
    if can_launch:
        # reverse() with the slugs already loaded: task.get_absolute_url() would query the
        # task's project again.
        relaunch_url = reverse("task_launch", args=[run.project.slug, run.task.slug]) + (
            f"?{urlencode(again)}" if again else ""
        )
    return {
        "run": run,
        "duration": duration_text(run.duration),
        "relaunch_url": relaunch_url,
        "controls": run_controls(run, executions, role),
    }


def _poll_url(run: Run, events_after: int, cursors: dict[int, int]) -> str:
    query = [("events_after", str(events_after))]
    query += [("log", f"{execution_id}:{seq}") for execution_id, seq in sorted(cursors.items())]
    return reverse("run_live", args=[run.pk]) + "?" + urlencode(query)


@require_GET
@page
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """Everything about one run as of now, then kept live by polling `run_live`."""
    run = selectors.run_get(request.user, run_id)
    now = timezone.now()
    executions = selectors.executions_for_run(run)
    tails = _log_tails(executions)
    events = selectors.events_after(run, 0, limit=FULL_EVENTS)
    events_after = events[-1].seq if events else 0
    cursors = {e.pk: tails[e.pk].last_seq for e in executions}
    return render(
        request,
        "runs/run_detail.html",
        {
            **_run_context(request, run, executions),
            "executions": [_execution_view(e, tails[e.pk], now) for e in executions],
            "events": events,
            "params": sorted(run.params.items()),
            # More events than one page: keep polling until caught up, even if the run ended.
            "live": not run.is_terminal or len(events) >= FULL_EVENTS,
            "poll_url": _poll_url(run, events_after, cursors),
            "nav": "runs",
        },
    )


def _log_cursors(values: list[str]) -> dict[int, int]:
    cursors: dict[int, int] = {}
    for value in values:
        execution_id, sep, after = value.partition(":")
        if not sep:
            raise ApplicationError(
                "log must look like <execution id>:<last seq>; reload the page to start over."
            )
        cursors[bounded_int(execution_id, "log execution id", maximum=MAX_ID)] = bounded_int(
            after, "log seq"
        )
    return cursors


@require_GET
@page
def run_live(request: HttpRequest, run_id: int) -> HttpResponse:
    """One poll of the run page: the new events and log lines after the cursors, appended with
    out-of-band swaps, a refreshed header and execution summaries, the run controls when they
    differ from the ones the page shows (`shown`), and the next poller.

    The poller stops (no hx-trigger) once the run has ended and everything was delivered.
    """
    run = selectors.run_get(request.user, run_id)
    try:
        events_after = bounded_int(request.GET.get("events_after"), "events_after")
        requested = _log_cursors(request.GET.getlist("log"))
    except ApplicationError as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain; charset=utf-8")
    now = timezone.now()
    executions = selectors.executions_for_run(run)
    known = {e.pk for e in executions}
    # Cursors of other runs' executions are ignored; executions the page has not seen yet
    # (a later pipeline stage) are sent whole and appended.
    cursors = {eid: after for eid, after in requested.items() if eid in known}
    fresh = [e for e in executions if e.pk not in cursors]
    updates = _logs_after(cursors)
    tails = {**updates, **_log_tails(fresh)}
    events = selectors.events_after(run, events_after, limit=LIVE_EVENTS)
    next_events_after = events[-1].seq if events else events_after
    caught_up = len(events) < LIVE_EVENTS and all(
        len(tail.blocks) < LIVE_CHUNKS for tail in updates.values()
    )
    next_cursors = {e.pk: tails[e.pk].last_seq for e in executions}
    views = [_execution_view(e, tails[e.pk], now) for e in executions]
    context = _run_context(request, run, executions)
    controls: RunControls = context["controls"]
    return render(
        request,
        "runs/partials/run_live.html",
        {
            **context,
            # `shown` is the state of the controls on the page (see RunControls).
            "controls_changed": controls.allowed and request.GET.get("shown") != controls.state,
            "updated": [v for v in views if v.execution.pk in cursors],
            "fresh": [v for v in views if v.execution.pk not in cursors],
            "events": events,
            "live": not (run.is_terminal and caught_up),
            "poll_url": _poll_url(run, next_events_after, next_cursors),
        },
    )


@require_GET
@page
def execution_log(request: HttpRequest, run_id: int, execution_id: int) -> StreamingHttpResponse:
    """The whole output of an execution as plain text, streamed a page of chunks at a time."""
    run = selectors.run_get(request.user, run_id)
    execution = Execution.objects.filter(pk=execution_id, run=run).first()
    if execution is None:
        raise Http404(f"Execution {execution_id} not found in run {run.pk}.")

    def lines() -> Iterator[str]:
        after = 0
        while True:
            chunks = selectors.logs_after(execution, after, limit=1000)
            for chunk in chunks:
                prefix = "" if chunk.stream == LogStream.STDOUT else f"[{chunk.stream}] "
                for line in chunk.text.split("\n"):
                    yield f"{prefix}{line}\n"
            if len(chunks) < 1000:
                return
            after = chunks[-1].seq

    response = StreamingHttpResponse(lines(), content_type="text/plain; charset=utf-8")
    filename = f"run-{run.pk}-{execution.name}.log".replace('"', "")
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    return response
