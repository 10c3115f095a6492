"""The state machine: the only place where a Run or Execution changes status.

Every move here:
  1. runs inside one transaction and locks the run row first, then the execution row
     (always in that order, so two transitions can never deadlock each other);
  2. checks the ALLOWED table and raises TransitionNotAllowed for anything else;
  3. stamps the times, writes the Event (and the AuditLog for human/API actions) in the same
     transaction as the change;
  4. schedules follow-up work (dispatch) with transaction.on_commit.

Run:        queued -> running -> succeeded | failed | cancelled | timed_out, plus paused, waiting.
Execution:  pending -> queued -> running -> succeeded | failed | cancelled | timed_out | skipped,
            plus waiting_approval; a failed attempt with retries left goes back to pending.

Claims are compare-and-set (UPDATE ... WHERE status=...): zero rows means another worker has it,
which is a normal outcome, not an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from runs.errors import NotFound, TransitionNotAllowed
from runs.models import (
    EXECUTION_TERMINAL,
    RUN_TERMINAL,
    AuditLog,
    Event,
    Execution,
    ExecutionStatus,
    Run,
    RunStatus,
)
from runs.notify import run_status_announce

logger = logging.getLogger(__name__)

R = RunStatus
E = ExecutionStatus

RUN_ALLOWED: dict[str, frozenset[str]] = {
    # queued -> waiting: a pipeline whose first stage waits for an approval.
    R.QUEUED: frozenset({R.RUNNING, R.WAITING, R.PAUSED, R.CANCELLED, R.FAILED, R.TIMED_OUT}),
    R.RUNNING: frozenset(
        {R.PAUSED, R.WAITING, R.SUCCEEDED, R.FAILED, R.CANCELLED, R.TIMED_OUT}
    ),
    # Running executions may finish while paused, so a paused run can end.
    R.PAUSED: frozenset(
        {R.QUEUED, R.RUNNING, R.SUCCEEDED, R.FAILED, R.CANCELLED, R.TIMED_OUT}
    ),
    R.WAITING: frozenset({R.RUNNING, R.PAUSED, R.FAILED, R.CANCELLED, R.TIMED_OUT}),
    # Terminal statuses allow nothing.
    R.SUCCEEDED: frozenset(),
    R.FAILED: frozenset(),
    R.CANCELLED: frozenset(),
    R.TIMED_OUT: frozenset(),
}

EXECUTION_ALLOWED: dict[str, frozenset[str]] = {
    E.PENDING: frozenset({E.QUEUED, E.WAITING_APPROVAL, E.CANCELLED, E.SKIPPED, E.FAILED}),
    # queued -> pending: the queue message was lost and the execution is re-admitted.
    E.QUEUED: frozenset({E.RUNNING, E.PENDING, E.CANCELLED, E.FAILED}),
    # running -> pending: the attempt failed with retries left (backoff via not_before).
    E.RUNNING: frozenset({E.SUCCEEDED, E.FAILED, E.CANCELLED, E.TIMED_OUT, E.PENDING}),
    E.WAITING_APPROVAL: frozenset({E.SUCCEEDED, E.FAILED, E.CANCELLED, E.TIMED_OUT, E.SKIPPED}),
    E.SUCCEEDED: frozenset(),
    E.FAILED: frozenset(),
    E.CANCELLED: frozenset(),
    E.TIMED_OUT: frozenset(),
    E.SKIPPED: frozenset(),
}

assert set(RUN_ALLOWED) == set(RunStatus.values)  # noqa: S101  every status has a row
assert set(EXECUTION_ALLOWED) == set(ExecutionStatus.values)  # noqa: S101


@dataclass(frozen=True)
class Actor:
    """Who causes a change: a person (ui/api/admin) or Switchyard itself (system)."""

    user: Any = None
    via: str = "system"  # ui, api, admin, system
    label: str = "switchyard"
    ip_address: str | None = None
    user_agent: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def is_human(self) -> bool:
        return self.via != "system"


SYSTEM = Actor()


def _check(kind: str, current: str, to: str, allowed: dict[str, frozenset[str]]) -> None:
    current, to = str(current), str(to)  # plain values in messages, not enum reprs
    if to not in allowed.get(current, frozenset()):
        permitted = ", ".join(sorted(allowed.get(current, ()))) or "nothing (it has ended)"
        raise TransitionNotAllowed(
            f"A {kind} cannot go from {current!r} to {to!r}; from {current!r} it may go to: "
            f"{permitted}."
        )


def event_append(
    run_id: int,
    kind: str,
    message: str,
    *,
    now: datetime,
    execution_id: int | None = None,
    data: dict | None = None,
    actor: Actor = SYSTEM,
) -> Event:
    """Append an event with the next gapless seq of the run. Must run inside a transaction.

    The UPDATE takes the run's row lock (or, on SQLite, the IMMEDIATE transaction holds the
    database write lock), so concurrent writers get consecutive seqs and a later seq never
    commits before an earlier one becomes visible to a reader that already saw the later one.
    """
    seq = _next_event_seq(run_id)
    return Event.objects.create(
        run_id=run_id,
        seq=seq,
        kind=kind,
        message=message,
        execution_id=execution_id,
        data=data or {},
        actor=actor.label if actor.is_human else "",
        created_at=now,
    )


def _next_event_seq(run_id: int) -> int:
    # One round trip: PostgreSQL and SQLite (3.35+) both support UPDATE ... RETURNING.
    table = connection.ops.quote_name(Run._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_event_seq = last_event_seq + 1 "  # noqa: S608  no input
            "WHERE id = %s RETURNING last_event_seq",
            [run_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise NotFound(f"Run {run_id} does not exist.")
    return row[0]


def audit_write(
    *,
    actor: Actor,
    action: str,
    obj: Any,
    now: datetime,
    project_id: int | None = None,
    changes: dict | None = None,
) -> AuditLog | None:
    """Record a human or API action. System actions are recorded as events only."""
    if not actor.is_human:
        return None
    user = actor.user if getattr(actor.user, "pk", None) else None
    return AuditLog.objects.create(
        created_at=now,
        actor=user,
        actor_label=actor.label,
        via=actor.via,
        action=action,
        project_id=project_id,
        object_type=obj._meta.model_name,
        object_id=str(obj.pk),
        changes=changes or {},
        ip_address=actor.ip_address,
        user_agent=actor.user_agent[:300],
    )


def _lock_run(run_id: int) -> Run:
    try:
        return Run.objects.select_for_update().get(pk=run_id)
    except Run.DoesNotExist:
        raise NotFound(f"Run {run_id} does not exist.") from None


def _lock_execution(execution_id: int) -> tuple[Run, Execution]:
    # Lock the run row first (found through the execution, locking only the run), then the
    # execution: the order every transition uses.
    run = Run.objects.select_for_update(of=("self",)).filter(executions__id=execution_id).first()
    if run is None:
        raise NotFound(f"Execution {execution_id} does not exist.")
    execution = Execution.objects.select_for_update().get(pk=execution_id)
    return run, execution


def _dispatch_on_commit() -> None:
    from jobs.dispatch import dispatch_soon

    dispatch_soon()


# --- generic moves ---------------------------------------------------------------------------


def run_transition(
    *,
    run_id: int,
    to: str,
    reason: str = "",
    actor: Actor = SYSTEM,
    event_kind: str | None = None,
    message: str | None = None,
    now: datetime | None = None,
    data: dict | None = None,
) -> Run:
    """Move a run to `to` (checked against RUN_ALLOWED), with its event and audit row."""
    now = now or timezone.now()
    with transaction.atomic():
        run = _lock_run(run_id)
        _run_move(run, to, reason=reason, actor=actor, now=now, event_kind=event_kind,
                  message=message, data=data)
    return run


def _run_move(
    run: Run,
    to: str,
    *,
    reason: str,
    actor: Actor,
    now: datetime,
    event_kind: str | None = None,
    message: str | None = None,
    data: dict | None = None,
) -> None:
    """Apply a run move on a row already locked by the caller."""
    _check("run", run.status, to, RUN_ALLOWED)
    previous = run.status
    run.status = to
    run.status_reason = reason
    update = ["status", "status_reason"]
    if to == R.RUNNING and run.started_at is None:
        run.started_at = now
        update.append("started_at")
    if to in RUN_TERMINAL:
        run.finished_at = now
        update.append("finished_at")
    run.save(update_fields=update)
    text = message or f"Run {RunStatus(to).label.lower()}" + (f": {reason}" if reason else ".")
    event_append(run.pk, event_kind or f"run.{to}", text, now=now, actor=actor,
                 data={"from": previous, "to": to, **(data or {})})
    audit_write(actor=actor, action=f"run.{to}", obj=run, now=now, project_id=run.project_id,
                changes={"status": [previous, to], "reason": reason} if reason else
                {"status": [previous, to]})
    if previous != R.PAUSED or to != R.RUNNING:  # resuming is not a new start
        run_status_announce(run=run, status=to, now=now)


def execution_transition(
    *,
    execution_id: int,
    to: str,
    reason: str = "",
    actor: Actor = SYSTEM,
    now: datetime | None = None,
) -> Execution:
    """Move an execution to `to` (checked against EXECUTION_ALLOWED); settles the run."""
    now = now or timezone.now()
    with transaction.atomic():
        run, execution = _lock_execution(execution_id)
        _execution_move(run, execution, to, reason=reason, actor=actor, now=now)
        run_settle(run, now=now)
    return execution


def _execution_move(
    run: Run,
    execution: Execution,
    to: str,
    *,
    reason: str,
    actor: Actor,
    now: datetime,
    data: dict | None = None,
    message: str | None = None,
    event_kind: str | None = None,
) -> None:
    _check("execution", execution.status, to, EXECUTION_ALLOWED)
    previous = execution.status
    execution.status = to
    update = ["status"]
    if to == E.QUEUED:
        execution.queued_at = now
        update.append("queued_at")
    if to in EXECUTION_TERMINAL:
        execution.finished_at = now
        update.append("finished_at")
        if reason and not execution.error:
            execution.error = reason
            update.append("error")
    execution.save(update_fields=update)
    text = message or (
        f"{execution.name}: {ExecutionStatus(to).label.lower()}" + (f": {reason}" if reason else "")
    )
    event_append(run.pk, event_kind or f"execution.{to}", text, now=now,
                 execution_id=execution.pk, actor=actor,
                 data={"from": previous, "to": to, **(data or {})})
    if actor.is_human:
        audit_write(actor=actor, action=f"execution.{to}", obj=execution, now=now,
                    project_id=run.project_id, changes={"status": [previous, to]})


def run_settle(run: Run, *, now: datetime) -> None:
    """Invariant 1: a run is terminal iff all its executions are terminal.

    Called, on a locked run, after every execution move. Decides the run's final status from its
    executions: failed beats timed out beats cancelled beats succeeded.
    """
    if run.is_terminal:
        return
    statuses = list(run.executions.values_list("status", flat=True))
    decision: tuple[str, str] | None = None
    if statuses and all(s in EXECUTION_TERMINAL for s in statuses) and _is_pipeline(run):
        from runs.pipelines import pipeline_advance

        decision = pipeline_advance(run, now=now)
        if decision is None:  # the pipeline created its next executions
            statuses = list(run.executions.values_list("status", flat=True))
            transaction.on_commit(_dispatch_on_commit)
    if not statuses or any(s not in EXECUTION_TERMINAL for s in statuses):
        _run_sync_activity(run, statuses, now=now)
        return
    if decision is not None:
        final, reason = decision
        if final == R.CANCELLED and run.deadline_at and run.deadline_at <= now:
            final, reason = R.TIMED_OUT, deadline_reason(run)
        if run.status in (R.QUEUED, R.WAITING) and final == R.SUCCEEDED:
            _run_move(run, R.RUNNING, reason="", actor=SYSTEM, now=now, message="Run started.")
        _run_move(run, final, reason=reason, actor=SYSTEM, now=now)
        return
    if E.FAILED in statuses:
        final, reason = R.FAILED, _first_error(run, E.FAILED)
    elif E.TIMED_OUT in statuses:
        final, reason = R.TIMED_OUT, _first_error(run, E.TIMED_OUT)
    elif E.CANCELLED in statuses:
        final, reason = R.CANCELLED, _first_error(run, E.CANCELLED)
        if run.deadline_at and run.deadline_at <= now:
            final, reason = R.TIMED_OUT, deadline_reason(run)
    else:
        final, reason = R.SUCCEEDED, ""
    if run.status == R.QUEUED and final == R.SUCCEEDED:
        # Every move goes through the table: a run that never showed running does so first.
        _run_move(run, R.RUNNING, reason="", actor=SYSTEM, now=now, message="Run started.")
    _run_move(run, final, reason=reason, actor=SYSTEM, now=now)


def _is_pipeline(run: Run) -> bool:
    return run.task_snapshot.get("kind") == "pipeline"


def _run_sync_activity(run: Run, statuses: list[str], *, now: datetime) -> None:
    """Keep the run's status in step with its open executions: running once one has started,
    waiting while the only open work is an approval, running again once it is approved."""
    open_work = [s for s in statuses if s not in EXECUTION_TERMINAL]
    only_gates = bool(open_work) and all(s == E.WAITING_APPROVAL for s in open_work)
    if run.status == R.PAUSED:
        return
    if only_gates and run.status in (R.QUEUED, R.RUNNING):
        _run_move(run, R.WAITING, reason="waiting for approval", actor=SYSTEM, now=now,
                  message="Run waiting for an approval.")
    elif not only_gates and run.status == R.WAITING:
        _run_move(run, R.RUNNING, reason="", actor=SYSTEM, now=now, message="Run resumed "
                  "after the approval.")
    elif run.status == R.QUEUED and any(s == E.RUNNING for s in statuses):
        _run_move(run, R.RUNNING, reason="", actor=SYSTEM, now=now, message="Run started.")


def _first_error(run: Run, status: str) -> str:
    execution = run.executions.filter(status=status).order_by("position", "id").first()
    if execution is None:
        return ""
    first_line = (execution.error or "").strip().splitlines()
    summary = first_line[0] if first_line else ""
    label = f"{execution.name} {ExecutionStatus(status).label.lower()}"
    return f"{label}: {summary}" if summary else label



def deadline_reason(run: Run) -> str:
    return f"the run's deadline ({run.deadline_at:%Y-%m-%d %H:%M:%S} UTC) passed"
