"""End-user pages: projects, the launch form and the run list, and the plumbing every page
view shares (`page`, `actor_for`, bounded query parameters, durations).

Views are thin: visibility and reads go through `runs.selectors`, launching through
`runs.services.run_launch`. Domain errors become HTTP here: NotFound -> 404 (outsiders never learn
that something exists), Forbidden -> 403, any other ApplicationError -> 400 with its message.
A view renders the full page, or only a `partials/` fragment when htmx asks for it. The run page
and its live poll are in `runs.run_views`; the POST views of its controls in `runs.control_views`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from runs import selectors
from runs.errors import ApplicationError, Conflict, Forbidden, InvalidInput, NotFound
from runs.forms import (
    launch_values,
    nul_errors,
    param_fields,
    prefill_values,
    run_filters_parse,
)
from runs.models import Membership, Role, Run, RunStatus, Task, Trigger
from runs.params import params_validate
from runs.services import run_launch
from runs.transitions import Actor

RECENT_RUNS = 10
RUN_PAGE = 50
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

