"""The reaper's moves: lost leases and run deadlines."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction

from runs.models import (
    EXECUTION_TERMINAL,
    Attempt,
)
from runs.transitions.core import (
    SYSTEM,
    E,
    _dispatch_on_commit,
    _execution_move,
    _lock_execution,
    _lock_run,
    deadline_reason,
    event_append,
    run_settle,
)
from runs.transitions.engine import _execution_retry, _should_retry

logger = logging.getLogger(__name__)


# --- the reaper's moves ----------------------------------------------------------------------


def lease_expire(*, execution_id: int, now: datetime, lease_seconds: float) -> bool:
    """A running execution whose heartbeat is older than the lease lost its worker: end the
    attempt as lease_expired and retry it (a lost worker always retries) or fail it.

    Returns False if, under the lock, the lease turns out to be fresh (the worker is alive).
    """
    from datetime import timedelta

    with transaction.atomic():
        run, execution = _lock_execution(execution_id)
        if execution.status != E.RUNNING:
            return False
        cutoff = now - timedelta(seconds=lease_seconds)
        if execution.heartbeat_at and execution.heartbeat_at >= cutoff:
            return False
        seen = execution.heartbeat_at.isoformat() if execution.heartbeat_at else "never"
        error = (f"Lost: worker {execution.worker or '?'} stopped heartbeating (last seen "
                 f"{seen}, lease {lease_seconds:g} s); it probably died.")
        Attempt.objects.filter(execution=execution, number=execution.attempt).update(
            finished_at=now, outcome="lease_expired", error=error
        )
        event_append(run.pk, "execution.lease_expired", f"{execution.name}: attempt "
                     f"{execution.attempt} {error[0].lower()}{error[1:]}", now=now,
                     execution_id=execution.pk,
                     data={"attempt": execution.attempt, "worker": execution.worker,
                           "heartbeat_at": seen})
        execution.outcome = "lease_expired"
        execution.error = error
        execution.save(update_fields=["outcome", "error"])
        if execution.cancel_requested_at:
            _execution_move(run, execution, E.CANCELLED, reason=execution.cancel_reason,
                            actor=SYSTEM, now=now)
        elif _should_retry(run, execution, E.FAILED, "lease_expired"):
            _execution_retry(run, execution, now=now, outcome="lease_expired", error=error)
        else:
            _execution_move(run, execution, E.FAILED, reason=error, actor=SYSTEM, now=now)
        run_settle(run, now=now)
        transaction.on_commit(_dispatch_on_commit)
    return True


def run_deadline_expire(*, run_id: int, now: datetime) -> bool:
    """The run's deadline passed: cancel what has not started, ask running executions to stop;
    the run ends timed_out (run_settle) once every execution has ended, keeping invariant 1."""
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.is_terminal or not run.deadline_at or run.deadline_at > now:
            return False
        reason = deadline_reason(run)
        pending_stop = run.executions.filter(status=E.RUNNING, cancel_requested_at__isnull=True)
        if not pending_stop.exists() and not run.executions.exclude(
                status__in=EXECUTION_TERMINAL).exclude(status=E.RUNNING).exists():
            return False  # already handled; waiting for running executions to stop
        event_append(run.pk, "run.deadline_passed", f"Run timing out: {reason}.", now=now)
        for execution in run.executions.select_for_update().exclude(
                status__in=EXECUTION_TERMINAL):
            if execution.status == E.RUNNING:
                if execution.cancel_requested_at is None:
                    execution.cancel_requested_at = now
                    execution.cancel_reason = reason
                    execution.save(update_fields=["cancel_requested_at", "cancel_reason"])
            else:
                execution.cancel_reason = reason
                execution.save(update_fields=["cancel_reason"])
                _execution_move(run, execution, E.CANCELLED, reason=reason, actor=SYSTEM,
                                now=now)
        run_settle(run, now=now)
    return True
