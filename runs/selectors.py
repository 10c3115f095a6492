"""Reads: every query the pages and the API make, with their select_related declared here.

Visibility is enforced here too: a user sees only projects they are a member of (staff see all),
and anything outside them is NotFound, never Forbidden, so existence does not leak.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from runs.errors import ApplicationError, Forbidden, NotFound
from runs.models import (
    Event,
    Execution,
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


def executions_for_run(run: Run) -> list[Execution]:
    """Executions with attempts, each annotated for display: `max_attempts`, `attempt_label`
    ("attempt 2 of 3") and `why_waiting` (backoff, slot, pause or "no worker alive")."""
    executions = list(run.executions.prefetch_related("attempts").order_by("position", "id"))
    alive = None
    for execution in executions:
        execution.max_attempts = int(run.task_snapshot.get("max_attempts") or 1)
        execution.attempt_label = (
            f"attempt {execution.attempt} of {execution.max_attempts}" if execution.attempt
            else "not started"
        )
        reason = ""
        if execution.status in ("pending", "queued"):
            if alive is None:
                alive = worker_count_alive() > 0
            if run.status == "paused":
                reason = "waiting: the run is paused"
            elif execution.waiting_reason:
                reason = execution.waiting_reason
            if not alive:
                reason = (f"{reason}; " if reason else "") + "no worker alive: start one with " \
                    "manage.py qcluster"
        execution.why_waiting = reason
    return executions


def worker_count_alive() -> int:
    from jobs.registry import workers_alive

    return workers_alive().count()


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


@dataclass
class RunFilters:
    project: str | None = None
    task: str | None = None
    status: str | None = None
    trigger: str | None = None
    created_by: str | None = None
    created_after: Any = None
    created_before: Any = None

    def errors(self) -> dict[str, list[str]]:
        problems: dict[str, list[str]] = {}
        if self.status and self.status not in RunStatus.values:
            problems["status"] = [f"must be one of: {', '.join(RunStatus.values)}"]
        if self.trigger and self.trigger not in Trigger.values:
            problems["trigger"] = [f"must be one of: {', '.join(Trigger.values)}"]
        return problems


def runs_list(
    user, *, filters: RunFilters, cursor: str | None = None, limit: int = 50
) -> tuple[list[Run], str | None]:
    """Runs the user can see, newest first, by keyset on id. Returns (rows, next cursor)."""
    cursor_decode(cursor)  # a bad cursor is reported before bad filters
    problems = filters.errors()
    if problems:
        from runs.errors import InvalidInput

        raise InvalidInput("Some filters are invalid.", fields=problems)
    qs: QuerySet[Run] = Run.objects.select_related("project", "task", "created_by")
    if not user.is_staff:
        qs = qs.filter(project__memberships__user=user)
    if filters.project:
        qs = qs.filter(project__slug=filters.project)
    if filters.task:
        qs = qs.filter(task__slug=filters.task)
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.trigger:
        qs = qs.filter(trigger=filters.trigger)
    if filters.created_by:
        qs = qs.filter(created_by__username=filters.created_by)
    if filters.created_after:
        qs = qs.filter(created_at__gte=filters.created_after)
    if filters.created_before:
        qs = qs.filter(created_at__lt=filters.created_before)
    return keyset_page(qs, cursor=cursor, limit=limit)


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
