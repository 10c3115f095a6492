"""End-user pages: the dashboard, the project page, the launch form, the run list and the
no-worker banner's poll; and the plumbing every page view shares (`page`, `after_post`,
`actor_for`, the run tables' polling, bounded query parameters, durations).

Views are thin: visibility and reads go through `runs.selectors`, launching through
`runs.services.run_launch`. Domain errors become HTTP here: NotFound -> 404 (outsiders never learn
that something exists), Forbidden -> 403, any other ApplicationError -> 400 with its message.
A view renders the full page, or only a `partials/` fragment when htmx asks for it. The run page
and its live poll are in `runs.run_views`; the POST views of its controls in `runs.control_views`;
a project's members in `runs.member_views`; API tokens and the password in `runs.account_views`.
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
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from runs import selectors
from runs.charts import duration_chart
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
CHART_RUNS = 40  # the project page's chart: this many most recent ended runs
MEMBERS_SHOWN = 8  # the project page's glimpse of its members; the members page has them all
RELAUNCH_PARAM = "from-run"  # a dash: no parameter can be called this (runs.params.NAME_RE)
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


class HttpResponseSeeOther(HttpResponseRedirect):
    """303: after a POST the browser GETs the page, and a reload does not post again."""

    status_code = 303


def after_post(request: HttpRequest, url: str, *, status: int = 200) -> HttpResponseBase:
    """Where a page's POST form lands: a 303 to `url`, or under htmx HX-Redirect to it.

    htmx would follow a plain redirect inside its request and swap the whole page into the
    form; HX-Redirect makes the browser load the page itself.
    """
    if request.htmx:
        response = HttpResponseClientRedirect(url)
        response.status_code = status
        return response
    return HttpResponseSeeOther(url)


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


# A run table polls its rows every ROWS_FAST while a listed run is going, and every ROWS_SLOW
# while all have ended (to show runs launched meanwhile); an older page, whose rows have all
# ended and which new runs never reach, does not poll.
ROWS_FAST = "2s"
ROWS_SLOW = "15s"


def rows_poll(runs: list[Run], *, first_page: bool = True) -> str:
    """How often a run table re-fetches its rows: ROWS_FAST, ROWS_SLOW or '' (never)."""
    if any_live(runs):
        return ROWS_FAST
    return ROWS_SLOW if first_page else ""


def rows_context(request: HttpRequest, runs: list[Run], *, first_page: bool = True,
                 **extra: Any) -> dict[str, Any]:
    """What the run table partial needs, shared by every page that has one."""
    return {"runs": runs, "poll_url": request.get_full_path(),
            "rows_poll": rows_poll(runs, first_page=first_page), "now": timezone.now(),
            **extra}


# --- projects ----------------------------------------------------------------------------------


@require_GET
@page
def home(request: HttpRequest) -> HttpResponse:
    """The dashboard: what is going on in the user's projects (runs running, queued, waiting,
    failed lately), approvals waiting for them, their projects, and the latest runs, all of
    them or only their own (?runs=mine), kept live."""
    user = request.user
    mine = request.GET.get("runs") == "mine"
    filters = selectors.RunFilters(created_by=user.get_username() if mine else None)
    runs, _ = selectors.runs_list(user, filters=filters, limit=RECENT_RUNS)
    context = rows_context(request, runs, show_project=True)
    if rows_requested(request):
        # The figures above the table move with it.
        tallies = selectors.run_tallies(user, now=context["now"])
        return render(request, "runs/partials/run_rows.html",
                      {**context, "tallies": tallies, "tiles_oob": True})
    own_role = Membership.objects.filter(project=OuterRef("pk"), user=user).values("role")[:1]
    projects = list(
        selectors.projects_for_user(user)
        .annotate(task_count=Count("tasks", distinct=True), own_role=Subquery(own_role))
        .order_by("name")
    )
    for project in projects:
        # As in selectors.role_of: staff act as maintainers everywhere, member or not.
        project.role_label = Role(Role.MAINTAINER if user.is_staff else project.own_role).label
    tallies = selectors.run_tallies(user, now=context["now"]) if projects else {}
    return render(request, "runs/home.html", {
        **context,
        "projects": projects,
        "mine": mine,
        "tallies": tallies,
        "approvals": selectors.approvals_waiting(user) if projects else [],
        "nav": "home",
    })


@require_GET
@page
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """A project's tasks with their last run (and Launch for operators), a chart of its recent
    runs' durations and outcomes, a glimpse of its members, and its latest runs (live)."""
    project = selectors.project_get(request.user, slug)
    runs, _ = selectors.runs_list(
        request.user, filters=selectors.RunFilters(project=project.slug), limit=RECENT_RUNS
    )
    context = rows_context(request, runs, show_project=False)
    if rows_requested(request):
        return render(request, "runs/partials/run_rows.html", context)
    role = selectors.role_of(request.user, project)
    history = selectors.runs_ended_recently(project, limit=CHART_RUNS)
    members = selectors.members_of(project, limit=MEMBERS_SHOWN + 1)
    return render(
        request,
        "runs/project_detail.html",
        {
            **context,
            "project": project,
            "tasks": selectors.tasks_with_last_run(project),
            "chart": duration_chart(history),
            "members": members[:MEMBERS_SHOWN],
            "more_members": len(members) > MEMBERS_SHOWN,
            "role": Role(role).label if role else "",
            "can_launch": role is not None and Role.rank(role) >= Role.rank(Role.OPERATOR),
            "can_manage": role == Role.MAINTAINER,
            "nav": "projects",
            "tab": "overview",
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
    # "Launch again" links name the run they copy (a name no parameter can have).
    source = request.GET.get(RELAUNCH_PARAM, "")
    copied_from = int(source) if values is not None and source.isascii() and source.isdigit() \
        and len(source) <= 18 else None
    return _launch_render(request, task, fields=param_fields(task.params_schema, values=values),
                          copied_from=copied_from)


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
    copied_from: int | None = None,
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
            **rows_context(request, runs, show_project=False, hide_task=True),
            # The recent runs' poll re-renders this page; never re-post the form.
            "poll_url": "",
            "task": task,
            "project": task.project,
            "fields": fields,
            "invalid": [f for f in fields if f.errors],
            "has_secrets": any(f.type == "secret" for f in fields),
            "copied_from": copied_from,
            "error": error,
            "general_errors": general_errors or [],
            "can_launch": can_launch,
            "role": Role(role).label if role else "",
            "timeout": duration_text(timedelta(seconds=task.timeout_seconds)),
            "retries": _retry_text(task),
            "nav": "projects",
        },
        status=status,
    )


def _retry_text(task: Task) -> str:
    """'No retries', or 'Up to 3 tries, waiting 1 min, 5 min between them'."""
    if task.max_attempts <= 1:
        return "No retries"
    backoff = task.retry_backoff if isinstance(task.retry_backoff, list) else []
    waits = [duration_text(timedelta(seconds=int(s))) for s in backoff[: task.max_attempts - 1]
             if isinstance(s, int | float)]
    text = f"Up to {task.max_attempts} tries"
    return f"{text}, waiting {', '.join(waits)} between them" if waits else text


# --- run list ----------------------------------------------------------------------------------


@require_GET
@page
def run_list(request: HttpRequest) -> HttpResponse:
    """Runs the user can see, filtered (project, task, status, trigger, who, days, a search by
    id or task), newest first, one keyset page at a time, with the runs per status.

    The table body re-fetches itself (see rows_poll); on this page the poll also refreshes the
    status counts, out of band.
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
    query = {name: value for name, value in raw.items() if value}
    context = rows_context(request, runs, first_page=not cursor, show_project=True,
                           empty_text="No runs match these filters.")
    if rows_requested(request) and not error:
        context["status_counts"] = _status_counts(request, filters, query)
        context["counts_oob"] = True
        return render(request, "runs/partials/run_rows.html", context)

    visible = selectors.projects_for_user(request.user)
    projects = list(visible.order_by("name").values_list("slug", "name"))
    tasks = (
        Task.objects.filter(project__in=visible)
        .order_by("name", "slug")
        .values_list("slug", "name")
        .distinct()
    )
    username = request.user.get_username()
    rest = {k: v for k, v in query.items() if k != "by"}
    return render(
        request,
        "runs/run_list.html",
        {
            **context,
            "error": error,
            "filter_errors": filter_errors,
            "values": raw,
            "projects": projects,
            "tasks": list(tasks),
            "people": selectors.usernames_for_user(request.user),
            "statuses": RunStatus.choices,
            "triggers": Trigger.choices,
            "status_counts": [] if error else _status_counts(request, filters, query),
            "filtered": bool(query),
            "paged": bool(cursor),
            "mine": raw["by"] == username,
            "all_url": _url("run_list", rest),
            "mine_url": _url("run_list", {**rest, "by": username}),
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
    """Runs per status under the other filters, as links that add the status filter (one
    grouped COUNT, selectors.run_status_counts)."""
    counts = selectors.run_status_counts(request.user, filters)
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


@require_GET
@page
def worker_banner(request: HttpRequest) -> HttpResponse:
    """The no-worker banner alone, for its own poll: it goes away once a worker is alive."""
    return render(request, "runs/partials/worker_banner.html")
