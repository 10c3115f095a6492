"""People's controls: cancel, pause, resume, and approvals of pipeline stages."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from runs.errors import TransitionNotAllowed
from runs.models import (
    EXECUTION_TERMINAL,
    Execution,
    Run,
)
from runs.transitions.core import (
    SYSTEM,
    Actor,
    E,
    R,
    _dispatch_on_commit,
    _execution_move,
    _lock_execution,
    _lock_run,
    _run_move,
    audit_write,
    event_append,
    run_settle,
)

logger = logging.getLogger(__name__)


# --- controls: cancel, pause, resume ---------------------------------------------------------


def execution_cancel(*, execution_id: int, actor: Actor, reason: str = "",
                     now: datetime | None = None) -> Execution:
    """Cancel one execution. Not yet running: cancelled at once. Running: a stop request the
    worker's heartbeat picks up within a second or two (SIGTERM to the group, grace, SIGKILL);
    the execution becomes cancelled when the worker reports back, or when the reaper finds
    its lease expired."""
    now = now or timezone.now()
    with transaction.atomic():
        run, execution = _lock_execution(execution_id)
        _execution_cancel_locked(run, execution, actor=actor, reason=reason, now=now)
        run_settle(run, now=now)
        transaction.on_commit(_dispatch_on_commit)
    return execution


def _cancel_text(actor: Actor, reason: str) -> str:
    who = actor.label if actor.is_human else "Switchyard"
    text = f"cancelled by {who}" + (f": {reason}" if reason else "")
    # Bounded by Execution.cancel_reason; the full reason is kept in the audit row.
    return text if len(text) <= 300 else text[:299] + "…"


def _execution_cancel_locked(run: Run, execution: Execution, *, actor: Actor, reason: str,
                             now: datetime, audit: bool = True) -> None:
    if execution.is_terminal:
        raise TransitionNotAllowed(
            f"Execution {execution.pk} has already ended ({execution.status}); nothing to cancel."
        )
    text = _cancel_text(actor, reason)
    if execution.status == E.RUNNING:
        if execution.cancel_requested_at is None:
            execution.cancel_requested_at = now
            execution.cancel_reason = text
            execution.save(update_fields=["cancel_requested_at", "cancel_reason"])
            event_append(run.pk, "execution.cancel_requested",
                         f"{execution.name}: stop requested ({text}); terminating the process.",
                         now=now, execution_id=execution.pk, actor=actor)
            if audit:
                audit_write(actor=actor, action="execution.cancel", obj=execution, now=now,
                            project_id=run.project_id, changes={"reason": reason})
        return
    execution.cancel_reason = text
    execution.waiting_reason = ""
    execution.save(update_fields=["cancel_reason", "waiting_reason"])
    _execution_move(run, execution, E.CANCELLED, reason=text, now=now,
                    actor=actor if audit else Actor(via="system", label=actor.label))


def run_cancel(*, run_id: int, actor: Actor, reason: str = "",
               now: datetime | None = None) -> Run:
    """Cancel a whole run: every execution not yet ended is cancelled (running ones are asked
    to stop). The run becomes cancelled once the last one has ended."""
    now = now or timezone.now()
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.is_terminal:
            raise TransitionNotAllowed(
                f"Run {run.pk} has already ended ({run.status}); nothing to cancel."
            )
        audit_write(actor=actor, action="run.cancel", obj=run, now=now,
                    project_id=run.project_id, changes={"reason": reason})
        event_append(run.pk, "run.cancel_requested",
                     f"Run {_cancel_text(actor, reason)}.", now=now, actor=actor)
        executions = list(run.executions.select_for_update().exclude(
            status__in=EXECUTION_TERMINAL).order_by("position", "id"))
        for execution in executions:  # one audit row for the run, none per execution
            _execution_cancel_locked(run, execution, actor=actor, reason=reason, now=now,
                                     audit=False)
        run.refresh_from_db()
        run_settle(run, now=now)  # terminal now, or once its running executions have stopped
        transaction.on_commit(_dispatch_on_commit)
    return run


def run_pause(*, run_id: int, actor: Actor, reason: str = "", now: datetime | None = None
              ) -> Run:
    """Pause: start no new executions; running ones finish normally."""
    now = now or timezone.now()
    with transaction.atomic():
        run = _lock_run(run_id)
        _run_move(run, R.PAUSED, reason=reason, actor=actor, now=now,
                  message=f"Run paused by {actor.label}: no new executions start until resumed.")
    return run


def run_resume(*, run_id: int, actor: Actor, now: datetime | None = None) -> Run:
    """Resume a paused run: back to running (or queued if nothing had started)."""
    now = now or timezone.now()
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.status != R.PAUSED:
            raise TransitionNotAllowed(f"Run {run.pk} is {run.status}, not paused.")
        to = R.RUNNING if run.started_at else R.QUEUED
        _run_move(run, to, reason="", actor=actor, now=now,
                  event_kind="run.resumed", message=f"Run resumed by {actor.label}.")
        transaction.on_commit(_dispatch_on_commit)
    return run



# --- approvals -------------------------------------------------------------------------------


def execution_approve(*, execution_id: int, actor: Actor, approve: bool, comment: str = "",
                      now: datetime | None = None) -> Execution:
    """Approve or reject a stage waiting for approval (the caller checks the role)."""
    now = now or timezone.now()
    with transaction.atomic():
        run, execution = _lock_execution(execution_id)
        if execution.status != E.WAITING_APPROVAL:
            raise TransitionNotAllowed(
                f"{execution.name} is {execution.status}, not waiting for approval."
            )
        _approval_resolve(run, execution, approve=approve, comment=comment, actor=actor,
                          now=now)
        run_settle(run, now=now)
    return execution


def _approval_resolve(run: Run, execution: Execution, *, approve: bool, comment: str,
                      actor: Actor, now: datetime) -> None:
    verb = "approved" if approve else "rejected"
    who = actor.label if actor.is_human else "Switchyard"
    text = f"{execution.stage} {verb} by {who}" + (f": {comment}" if comment else "")
    execution.result = {"approved": approve, "by": who, "comment": comment}
    execution.save(update_fields=["result"])
    _execution_move(run, execution, E.SUCCEEDED if approve else E.FAILED,
                    reason="" if approve else text, actor=SYSTEM, now=now, message=text,
                    event_kind=f"approval.{'granted' if approve else 'rejected'}",
                    data={"comment": comment, "by": who})
    audit_write(actor=actor, action=f"approval.{'grant' if approve else 'reject'}",
                obj=execution, now=now, project_id=run.project_id,
                changes={"stage": execution.stage, "comment": comment})


def approval_expire(*, execution_id: int, now: datetime) -> bool:
    """An approval whose timeout passed resolves as its stage says (reject by default)."""
    with transaction.atomic():
        run, execution = _lock_execution(execution_id)
        if (execution.status != E.WAITING_APPROVAL or not execution.not_before
                or execution.not_before > now):
            return False
        approve = execution.definition.get("on_timeout", "reject") == "approve"
        _approval_resolve(run, execution, approve=approve,
                          comment="no decision before the approval timeout", actor=SYSTEM,
                          now=now)
        run_settle(run, now=now)
    return True
