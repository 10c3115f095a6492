"""REST endpoints for projects, tasks, runs, events and logs. Each endpoint validates a
schema, calls a selector or a service, and returns a schema; nothing else."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count
from django.http import HttpRequest
from ninja import Header, Path, Query, Router, Status

from runs import selectors
from runs.models import Role, Run, Trigger
from runs.schemas import (
    CommentIn,
    ControlIn,
    ErrorOut,
    EventPage,
    LaunchIn,
    LogPage,
    RerunIn,
    RunDetailOut,
    RunPage,
    WorkersOut,
)
from runs.services import run_delete, run_launch, run_rerun
from runs.transitions import (
    Actor,
    execution_approve,
    execution_cancel,
    run_cancel,
    run_pause,
    run_resume,
)

router = Router(tags=["runs"])

ERRORS = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut}
# Ids in paths are positive; declaring it keeps generated clients and fuzzers honest.
ID = Path(..., ge=1)


def actor_for(request: HttpRequest) -> Actor:
    """The Actor for audit rows: the authenticated user, via api, with address and agent."""
    user = request.user
    return Actor(
        user=user,
        via="api",
        label=user.get_username(),
        ip_address=request.META.get("REMOTE_ADDR") or None,  # an inet column rejects ''
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
    )


def run_out(request: HttpRequest, run: Run) -> dict:
    return {
        "id": run.pk,
        "project": run.project.slug,
        "task": run.task.slug,
        "status": run.status,
        "status_reason": run.status_reason,
        "trigger": run.trigger,
        "params": run.params,
        "created_by": run.created_by.get_username() if run.created_by else None,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "is_terminal": run.is_terminal,
        "url": request.build_absolute_uri(run.get_absolute_url()),
    }


@router.post(
    "/projects/{project}/tasks/{task}/runs",
    response={200: RunDetailOut, 201: RunDetailOut, 403: ErrorOut, 409: ErrorOut,
              422: ErrorOut, **ERRORS},
    operation_id="runs_launch",
)
def runs_launch(
    request: HttpRequest,
    project: str,
    task: str,
    body: LaunchIn,
    idempotency_key: str = Header("", alias="Idempotency-Key"),
):
    """Launch a run of a task. Parameters are validated against the task's schema (422 with
    errors per field). With an `Idempotency-Key` header, repeating the same request returns
    the same run (200); the same key with another body is a 409."""
    found = selectors.task_get(request.user, project, task, minimum=Role.OPERATOR)
    run, created = run_launch(
        task=found, raw_params=body.params, actor=actor_for(request), trigger=Trigger.API,
        idempotency_key=idempotency_key.strip(),
    )
    run = selectors.run_get(request.user, run.pk)
    return Status(201 if created else 200, _run_detail(request, run))


def _run_detail(request: HttpRequest, run: Run) -> dict:
    data = run_out(request, run)
    executions = selectors.executions_for_run(run)
    data["executions"] = executions
    data["progress"] = selectors.run_progress(run, executions)
    data["rerun_of"] = run.rerun_of_id
    data["rerun_mode"] = run.rerun_mode
    return data


@router.get("/runs", response={200: RunPage, 422: ErrorOut, **ERRORS}, operation_id="runs_list")
def runs_list(
    request: HttpRequest,
    project: str | None = None,
    task: str | None = None,
    status: str | None = None,
    trigger: str | None = None,
    created_by: str | None = None,
    created_after: datetime | None = Query(None, description="ISO 8601, inclusive"),
    created_before: datetime | None = Query(None, description="ISO 8601, exclusive"),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=200),
):
    """Runs you can see, newest first. Keyset pagination: follow `next_cursor`."""
    filters = selectors.RunFilters(project=project, task=task, status=status, trigger=trigger,
                                   created_by=created_by, created_after=created_after,
                                   created_before=created_before)
    rows, next_cursor = selectors.runs_list(request.user, filters=filters, cursor=cursor,
                                            limit=limit)
    return {"items": [run_out(request, r) for r in rows], "next_cursor": next_cursor}


@router.get("/runs/{int:run_id}", response={200: RunDetailOut, **ERRORS},
            operation_id="runs_get")
def runs_get(request: HttpRequest, run_id: int = ID):
    """A run with its status and executions (attempts included)."""
    return _run_detail(request, selectors.run_get(request.user, run_id))


@router.get("/runs/{int:run_id}/events", response={200: EventPage, **ERRORS},
            operation_id="runs_events")
def runs_events(
    request: HttpRequest,
    run_id: int = ID,
    after: int = Query(0, ge=0, description="Return events with seq greater than this."),
    limit: int = Query(500, ge=1, le=1000),
):
    """The run's timeline after a cursor. `seq` is gapless per run, so `?after=<last seq>`
    never skips an event."""
    run = selectors.run_get(request.user, run_id)
    # Read the status before the events: if the run had ended then, its last event is in.
    finished = run.is_terminal
    events = selectors.events_after(run, after, limit)
    next_after = events[-1].seq if events else after
    return {
        "items": events,
        "next_after": next_after,
        "run_status": run.status,
        "run_finished": finished and next_after >= run.last_event_seq,
    }


@router.get("/executions/{int:execution_id}/logs", response={200: LogPage, **ERRORS},
            operation_id="executions_logs")
def executions_logs(
    request: HttpRequest,
    execution_id: int = ID,
    after: int = Query(0, ge=0, description="Return chunks with seq greater than this."),
    limit: int = Query(200, ge=1, le=1000),
):
    """Log chunks of an execution after a cursor (each chunk is several lines of one stream)."""
    execution = selectors.execution_get(request.user, execution_id)
    finished = execution.is_terminal
    chunks = selectors.logs_after(execution, after, limit)
    return {
        "items": chunks,
        "next_after": chunks[-1].seq if chunks else after,
        "execution_status": execution.status,
        "finished": finished and len(chunks) < limit,
    }


CONTROL = {200: RunDetailOut, 403: ErrorOut, 409: ErrorOut, 422: ErrorOut, **ERRORS}


@router.post("/runs/{int:run_id}/cancel", response=CONTROL, operation_id="runs_cancel")
def runs_cancel(request: HttpRequest, run_id: int = ID, body: ControlIn | None = None):
    """Cancel a run: executions not started are cancelled at once; running commands get
    SIGTERM (then SIGKILL after the grace period), grandchildren included."""
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)
    run_cancel(run_id=run.pk, actor=actor_for(request), reason=body.reason if body else "")
    return _run_detail(request, selectors.run_get(request.user, run_id))


@router.post("/runs/{int:run_id}/pause", response=CONTROL, operation_id="runs_pause")
def runs_pause(request: HttpRequest, run_id: int = ID, body: ControlIn | None = None):
    """Pause a run: no new executions start; running ones finish."""
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)
    run_pause(run_id=run.pk, actor=actor_for(request), reason=body.reason if body else "")
    return _run_detail(request, selectors.run_get(request.user, run_id))


@router.post("/runs/{int:run_id}/resume", response=CONTROL, operation_id="runs_resume")
def runs_resume(request: HttpRequest, run_id: int = ID):
    """Resume a paused run."""
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)
    run_resume(run_id=run.pk, actor=actor_for(request))
    return _run_detail(request, selectors.run_get(request.user, run_id))


@router.post("/executions/{int:execution_id}/cancel", response=CONTROL,
             operation_id="executions_cancel")
def executions_cancel(request: HttpRequest, execution_id: int = ID,
                      body: ControlIn | None = None):
    """Cancel one execution of a run."""
    execution = selectors.execution_get(request.user, execution_id)
    selectors.require_role(request.user, execution.run.project, Role.OPERATOR)
    execution_cancel(execution_id=execution.pk, actor=actor_for(request),
                     reason=body.reason if body else "")
    return _run_detail(request, selectors.run_get(request.user, execution.run_id))


@router.get("/workers", response={200: WorkersOut, **ERRORS}, operation_id="workers_status")
def workers_status(request: HttpRequest):
    """Live workers and queue depth (of your projects). Worker details are shown to staff
    only."""
    from jobs.registry import workers_alive
    from runs.models import Execution

    alive = list(workers_alive())
    visible = Execution.objects.filter(status__in=["pending", "queued", "running"])
    if not request.user.is_staff:  # queue depth of the caller's own projects only
        visible = visible.filter(run__project__in=selectors.projects_for_user(request.user))
    counts = {row["status"]: row["n"]
              for row in visible.values("status").annotate(n=Count("id"))}
    details = []
    if request.user.is_staff:
        running: dict[str, list[int]] = {}
        for pk, worker in Execution.objects.filter(status="running").values_list("pk",
                                                                                "worker"):
            running.setdefault(worker, []).append(pk)
        details = [{"name": w.name, "host": w.host, "pid": w.pid, "started_at": w.started_at,
                    "last_seen_at": w.last_seen_at, "draining": w.draining,
                    "running": running.get(w.name, [])} for w in alive]
    return {"alive": len(alive), "workers": details, "queued": counts.get("queued", 0),
            "pending": counts.get("pending", 0), "running": counts.get("running", 0)}


@router.post("/runs/{int:run_id}/rerun", response={201: RunDetailOut, 403: ErrorOut,
                                                     409: ErrorOut, 422: ErrorOut, **ERRORS},
             operation_id="runs_rerun")
def runs_rerun(request: HttpRequest, run_id: int = ID, body: RerunIn | None = None):
    """Re-run an ended run with the same parameters: `mode` "all", or "failed" to reuse what
    succeeded and run only what failed or never ran."""
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)
    new = run_rerun(run=run, mode=body.mode if body else "all", actor=actor_for(request))
    return Status(201, _run_detail(request, selectors.run_get(request.user, new.pk)))


def _approval(request: HttpRequest, execution_id: int, approve: bool, comment: str) -> dict:
    execution = selectors.execution_get(request.user, execution_id)
    role = (execution.definition or {}).get("role", Role.OPERATOR)
    selectors.require_role(request.user, execution.run.project, role)
    execution_approve(execution_id=execution.pk, actor=actor_for(request), approve=approve,
                      comment=comment)
    return _run_detail(request, selectors.run_get(request.user, execution.run_id))


@router.post("/executions/{int:execution_id}/approve", response=CONTROL,
             operation_id="executions_approve")
def executions_approve(request: HttpRequest, execution_id: int = ID,
                       body: CommentIn | None = None):
    """Approve a stage waiting for approval (operator or maintainer, as the stage says)."""
    return _approval(request, execution_id, True, body.comment if body else "")


@router.post("/executions/{int:execution_id}/reject", response=CONTROL,
             operation_id="executions_reject")
def executions_reject(request: HttpRequest, execution_id: int = ID,
                      body: CommentIn | None = None):
    """Reject a stage waiting for approval: the stage fails, then its on_failure applies."""
    return _approval(request, execution_id, False, body.comment if body else "")


@router.delete("/runs/{int:run_id}", response={204: None, 403: ErrorOut, 409: ErrorOut,
                                               **ERRORS}, operation_id="runs_delete")
def runs_delete(request: HttpRequest, run_id: int = ID):
    """Delete a finished run with its logs, events and artifacts (maintainer). A task's
    baseline run must be cleared first."""
    run = selectors.run_get(request.user, run_id, minimum=Role.MAINTAINER)
    run_delete(run, actor=actor_for(request))
    return Status(204, None)
