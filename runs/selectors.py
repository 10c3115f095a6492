"""Reads: every query the pages and the API make, with their select_related declared here.

Visibility is enforced here too: a user sees only projects they are a member of (staff see all),
and anything outside them is NotFound, never Forbidden, so existence does not leak.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models import Case, Count, OuterRef, Q, QuerySet, Subquery, When
from django.utils import timezone

from runs.errors import ApplicationError, Forbidden, NotFound
from runs.models import (
    RUN_TERMINAL,
    ApiToken,
    AuditLog,
    Event,
    Execution,
    ExecutionStatus,
    LogChunk,
    Membership,
    Project,
    Role,
    Run,
    RunStatus,
    Task,
    Trigger,
)

MAX_PAGE = 200


def projects_for_user(user) -> QuerySet[Project]:
    """Projects the user can see."""
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_staff:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def role_of(user, project: Project) -> str | None:
    """The user's role in the project; staff act as maintainers everywhere."""
    if not user.is_authenticated:
        return None
    if user.is_staff:
        return Role.MAINTAINER
    return (
        Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    )


def has_role(user, project: Project, minimum: str) -> bool:
    role = role_of(user, project)
    return role is not None and Role.rank(role) >= Role.rank(minimum)


def require_role(user, project: Project, minimum: str) -> str:
    """The user's role if at least `minimum`. Outsiders get NotFound; members below it Forbidden."""
    role = role_of(user, project)
    if role is None:
        raise NotFound("Not found.")
    if Role.rank(role) < Role.rank(minimum):
        raise Forbidden(
            f"This needs the {minimum} role in project {project.slug!r}; you are {role}."
        )
    return role


def visible_or_404(user, obj, project_of, minimum: str, what: str):
    """`obj` if it exists and the user has `minimum` in its project; otherwise NotFound with
    the same message either way (outsiders cannot tell "missing" from "not yours"). A member
    whose role is too low gets Forbidden."""
    if obj is None:
        raise NotFound(f"{what} not found.")
    try:
        require_role(user, project_of(obj), minimum)
    except NotFound:
        raise NotFound(f"{what} not found.") from None
    return obj


def project_get(user, slug: str, *, minimum: str = Role.VIEWER) -> Project:
    project = Project.objects.filter(slug=slug).first()
    return visible_or_404(user, project, lambda p: p, minimum, f"Project {slug!r}")


def task_get(user, project_slug: str, task_slug: str, *, minimum: str = Role.VIEWER) -> Task:
    project = project_get(user, project_slug, minimum=minimum)
    task = Task.objects.select_related("project").filter(project=project, slug=task_slug).first()
    if task is None:
        raise NotFound(f"Task {task_slug!r} not found in project {project_slug!r}.")
    return task


def tasks_for_project(project: Project) -> QuerySet[Task]:
    return Task.objects.filter(project=project).select_related("project").order_by("name")


def tasks_with_last_run(project: Project) -> list[Task]:
    """The project's tasks, each with `last_run_id`, `last_run_status` and `last_run_at` (None
    when it never ran), in one query: correlated subqueries on the (task, -id) index."""
    latest = Run.objects.filter(task=OuterRef("pk")).order_by("-id")
    return list(
        tasks_for_project(project).annotate(
            last_run_id=Subquery(latest.values("id")[:1]),
            last_run_status=Subquery(latest.values("status")[:1]),
            last_run_at=Subquery(latest.values("created_at")[:1]),
        )
    )


def runs_ended_recently(project: Project, *, limit: int = 40) -> list[Run]:
    """The project's last `limit` ended runs, oldest first (the project page's chart)."""
    rows = list(
        Run.objects.filter(project=project, status__in=RUN_TERMINAL)
        .select_related("task")
        .only("id", "status", "created_at", "started_at", "finished_at", "task__name",
              "task__slug")
        .order_by("-id")[:limit]
    )
    rows.reverse()
    return rows


def members_of(project: Project, *, limit: int | None = None) -> list[Membership]:
    """The project's members, maintainers first, then by username."""
    order = Case(When(role=Role.MAINTAINER, then=0), When(role=Role.OPERATOR, then=1),
                 default=2)
    qs = (Membership.objects.filter(project=project).select_related("user")
          .order_by(order, "user__username"))
    return list(qs[:limit] if limit else qs)


def audit_for_project(project: Project, *, prefix: str = "", limit: int = 10) -> list[AuditLog]:
    """The project's latest audit rows, newest first, optionally of actions starting with
    `prefix` ("membership.")."""
    qs = AuditLog.objects.filter(project=project)
    if prefix:
        qs = qs.filter(action__startswith=prefix)
    return list(qs.order_by("-id")[:limit])


def api_tokens_of(user, *, cursor: str | None = None, limit: int = 50
                  ) -> tuple[list[ApiToken], str | None]:
    """The user's own API tokens, newest first, one keyset page at a time."""
    return keyset_page(ApiToken.objects.filter(user=user), cursor=cursor, limit=limit)


def usernames_for_user(user, *, limit: int = 200) -> list[str]:
    """Usernames of the people in the user's projects (the run list's "launched by" hints)."""
    User = get_user_model()
    qs = User.objects.filter(is_active=True)
    if not user.is_staff:
        qs = qs.filter(memberships__project__memberships__user=user)
    return list(qs.order_by("username").values_list("username", flat=True).distinct()[:limit])


def run_get(user, run_id: int, *, minimum: str = Role.VIEWER) -> Run:
    run = (
        Run.objects.select_related("project", "task", "created_by").filter(pk=run_id).first()
    )
    return visible_or_404(user, run, lambda r: r.project, minimum, f"Run {run_id}")


def execution_get(user, execution_id: int) -> Execution:
    execution = (
        Execution.objects.select_related("run", "run__project").filter(pk=execution_id).first()
    )
    return visible_or_404(user, execution, lambda e: e.run.project, Role.VIEWER,
                          f"Execution {execution_id}")


def executions_for_run(run: Run, *, now: datetime | None = None) -> list[Execution]:
    """Executions with attempts, each annotated for display: `max_attempts` and
    `attempt_label` ("attempt 2 of 3"), `retry_at` (when the next try of a failed attempt is
    due, if it is still to come) and `why_waiting` (a busy slot, a pause, "no worker alive").
    """
    from runs.transitions import retry_limit

    now = now or timezone.now()
    executions = list(run.executions.prefetch_related("attempts").order_by("position", "id"))
    alive = None
    for execution in executions:
        attempts = list(execution.attempts.all())  # prefetched: no query
        # A lost worker earns more tries than the task's own limit (see retry_limit).
        lost = bool(attempts) and attempts[-1].outcome == "lease_expired"
        execution.max_attempts = retry_limit(run, lost=lost)
        execution.attempt_label = (
            f"attempt {execution.attempt} of {execution.max_attempts}" if execution.attempt
            else "not started"
        )
        execution.retry_at = None
        if (execution.status == ExecutionStatus.PENDING and execution.attempt
                and execution.not_before and execution.not_before > now):
            execution.retry_at = execution.not_before
        reason = ""
        if execution.status in (ExecutionStatus.PENDING, ExecutionStatus.QUEUED):
            if alive is None:
                alive = workers_alive_any()
            if run.status == RunStatus.PAUSED:
                reason = "waiting: the run is paused"
            elif execution.retry_at is not None:
                pass  # the page counts down to the next try itself
            elif execution.waiting_reason and not execution.waiting_reason.startswith("retry "):
                # A busy slot or a parallelism ceiling (transitions.engine._admission_blocker);
                # "retry ..." is the backoff's own text (engine._execution_retry).
                reason = execution.waiting_reason
            elif execution.status == ExecutionStatus.PENDING and execution.attempt \
                    and execution.not_before:
                # A retry that is due: its stored reason ("retry 2 of 3 at ...") names a time
                # now past.
                reason = (f"retry due: attempt {execution.attempt + 1} of "
                          f"{execution.max_attempts} starts when a worker takes it")
            if not alive:
                reason = (f"{reason}; " if reason else "") + "no worker alive: start one with " \
                    "manage.py qcluster"
        execution.why_waiting = reason
    return executions


WORKERS_ALIVE_KEY = "switchyard:workers-alive"


def workers_alive_any() -> bool:
    """Whether any worker is alive. Every page asks (the worker banner), so the answer is kept
    for SWITCHYARD_WORKER_STATUS_CACHE_SECONDS in this process's cache."""
    from jobs.registry import workers_alive

    ttl = settings.SWITCHYARD_WORKER_STATUS_CACHE_SECONDS
    if ttl > 0:
        cached = cache.get(WORKERS_ALIVE_KEY)
        if cached is not None:
            return cached
    alive = workers_alive().exists()
    if ttl > 0:
        cache.set(WORKERS_ALIVE_KEY, alive, ttl)
    return alive


def executions_waiting_count(user) -> int:
    """Executions of the user's projects that wait for a worker: pending or queued in a run
    that may start them (not paused, not waiting for a person)."""
    qs = Execution.objects.filter(
        status__in=[ExecutionStatus.PENDING, ExecutionStatus.QUEUED],
        run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING],
    )
    if not user.is_staff:
        qs = qs.filter(run__project__memberships__user=user)
    return qs.count()


# --- keyset pagination -----------------------------------------------------------------------


def cursor_encode(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def cursor_decode(cursor: str | None) -> int | None:
    """The id a cursor points after; ApplicationError (400) for anything not made by us."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode()).decode()
        kind, _, value = text.partition(":")
        if kind != "id":
            raise ValueError
        number = int(value)
        if not 0 <= number < 2**63:  # a bigint; larger would overflow in the database
            raise ValueError
        return number
    except (ValueError, binascii.Error, UnicodeError):
        raise ApplicationError(
            "The cursor is not valid; pass the next_cursor value from a previous page, "
            "or leave it out to start from the newest."
        ) from None


def keyset_page(qs: QuerySet, *, cursor: str | None, limit: int) -> tuple[list, str | None]:
    """One page of a list, newest first by keyset on id (never OFFSET): (rows, the cursor of
    the next page or None). A cursor not made by cursor_encode is a 400."""
    after_id = cursor_decode(cursor)
    limit = max(1, min(limit, MAX_PAGE))
    if after_id is not None:
        qs = qs.filter(pk__lt=after_id)
    rows = list(qs.order_by("-id")[: limit + 1])
    next_cursor = cursor_encode(rows[limit - 1].pk) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _utc(value):
    """A datetime the database accepts: in UTC. Python allows offsets up to ±23:59, PostgreSQL
    only up to ±15:59, so `2026-01-01T00:00+16:30` would otherwise be a 500. Naive is UTC."""
    from datetime import UTC, datetime

    if not isinstance(value, datetime):
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # year 1 at -23:59, say: before anything stored
        return datetime.min.replace(tzinfo=UTC) if value.year < 2 else datetime.max.replace(
            tzinfo=UTC)


@dataclass
class RunFilters:
    project: str | None = None
    task: str | None = None
    status: str | None = None
    trigger: str | None = None
    created_by: str | None = None
    created_after: Any = None
    created_before: Any = None
    # The run list's search box: a run id ("41" or "#41"), else part of a task's name or slug.
    run_id: int | None = None
    text: str | None = None

    def errors(self) -> dict[str, list[str]]:
        problems: dict[str, list[str]] = {}
        if self.status and self.status not in RunStatus.values:
            problems["status"] = [f"must be one of: {', '.join(RunStatus.values)}"]
        if self.trigger and self.trigger not in Trigger.values:
            problems["trigger"] = [f"must be one of: {', '.join(Trigger.values)}"]
        return problems


def runs_filtered(user, filters: RunFilters, *, ignore_status: bool = False) -> QuerySet[Run]:
    """Runs the user can see under `filters` (unordered, unpaged); with `ignore_status`, under
    every filter but the status one (what the status counts are computed over)."""
    qs: QuerySet[Run] = Run.objects.all()
    if not user.is_staff:
        qs = qs.filter(project__memberships__user=user)
    if filters.project:
        qs = qs.filter(project__slug=filters.project)
    if filters.task:
        qs = qs.filter(task__slug=filters.task)
    if filters.status and not ignore_status:
        qs = qs.filter(status=filters.status)
    if filters.trigger:
        qs = qs.filter(trigger=filters.trigger)
    if filters.created_by:
        qs = qs.filter(created_by__username=filters.created_by)
    if filters.created_after:
        qs = qs.filter(created_at__gte=_utc(filters.created_after))
    if filters.created_before:
        qs = qs.filter(created_at__lt=_utc(filters.created_before))
    if filters.run_id is not None:
        qs = qs.filter(pk=filters.run_id)
    if filters.text:
        qs = qs.filter(Q(task__name__icontains=filters.text)
                       | Q(task__slug__icontains=filters.text))
    return qs


def runs_list(
    user, *, filters: RunFilters, cursor: str | None = None, limit: int = 50
) -> tuple[list[Run], str | None]:
    """Runs the user can see, newest first, by keyset on id. Returns (rows, next cursor)."""
    cursor_decode(cursor)  # a bad cursor is reported before bad filters
    problems = filters.errors()
    if problems:
        from runs.errors import InvalidInput

        raise InvalidInput("Some filters are invalid.", fields=problems)
    qs = runs_filtered(user, filters).select_related("project", "task", "created_by")
    return keyset_page(qs, cursor=cursor, limit=limit)


def run_status_counts(user, filters: RunFilters) -> dict[str, int]:
    """{status: runs} under every filter but the status one, in one grouped COUNT."""
    qs = runs_filtered(user, filters, ignore_status=True)
    return dict(qs.order_by().values_list("status").annotate(n=Count("id")))


def run_tallies(user, *, now: datetime) -> dict[str, int]:
    """The dashboard's figures over the user's projects, in one query: runs running, queued
    and waiting now, and runs that failed (or timed out) and succeeded in the last 24 hours."""
    since = now - timedelta(hours=24)
    qs = runs_filtered(user, RunFilters())
    return qs.aggregate(
        running=Count("id", filter=Q(status=RunStatus.RUNNING)),
        queued=Count("id", filter=Q(status=RunStatus.QUEUED)),
        waiting=Count("id", filter=Q(status=RunStatus.WAITING)),
        failed_24h=Count("id", filter=Q(status__in=[RunStatus.FAILED, RunStatus.TIMED_OUT],
                                        finished_at__gte=since)),
        succeeded_24h=Count("id", filter=Q(status=RunStatus.SUCCEEDED,
                                           finished_at__gte=since)),
    )


def approvals_waiting(user, *, limit: int = 10) -> list[Execution]:
    """Approval gates waiting in the user's projects that the user may decide (their role is
    at least the one the stage names), oldest first. Two queries: the gates, the roles."""
    from runs.pipelines import APPROVAL_STEP

    qs = Execution.objects.filter(status=ExecutionStatus.WAITING_APPROVAL, step=APPROVAL_STEP)
    if not user.is_staff:
        qs = qs.filter(run__project__memberships__user=user)
    gates = list(qs.select_related("run", "run__project", "run__task").order_by("id")[:200])
    if not gates:
        return []
    if user.is_staff:
        roles = {}
    else:
        roles = dict(Membership.objects.filter(user=user).values_list("project_id", "role"))
    mine = []
    for gate in gates:
        role = Role.MAINTAINER if user.is_staff else roles.get(gate.run.project_id)
        needed = (gate.definition or {}).get("role", Role.OPERATOR)
        if needed not in Role.values:
            needed = Role.MAINTAINER
        if role is not None and Role.rank(role) >= Role.rank(needed):
            mine.append(gate)
    return mine[:limit]


def events_after(run: Run, after: int = 0, limit: int = 500) -> list[Event]:
    return list(
        Event.objects.filter(run=run, seq__gt=after).order_by("seq")[: max(1, min(limit, 1000))]
    )


def logs_after(execution: Execution, after: int = 0, limit: int = 200) -> list[LogChunk]:
    return list(
        LogChunk.objects.filter(execution=execution, seq__gt=after).order_by("seq")[
            : max(1, min(limit, 1000))
        ]
    )


def run_log_chunks_after(run: Run, cursors: dict[int, int], limit: int = 200) -> dict[int, Any]:
    """Log chunks of every execution of a run after per-execution cursors (page live tail)."""
    result = {}
    for execution in run.executions.all():
        result[execution.pk] = logs_after(execution, cursors.get(execution.pk, 0), limit)
    return result


def run_progress(run: Run, executions: list[Execution]) -> dict:
    """Done/total for the run and, for pipelines, per stage with the current one."""
    from runs.pipelines import is_pipeline, progress

    if is_pipeline(run):
        return progress(run, executions)
    done = sum(1 for e in executions if e.is_terminal)
    total = len(executions)
    return {"done": done, "total": total, "percent": int(100 * done / total) if total else 0,
            "iteration": 1, "current_stage": None, "stages": []}
