"""The engine's moves: admission (queue), claim, fenced finish with retries and backoff, heartbeats,
redelivery and repair."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from runs.models import (
    EXECUTION_TERMINAL,
    RUN_TERMINAL,
    Attempt,
    Execution,
    ExecutionStatus,
    Run,
)
from runs.transitions.core import (
    SYSTEM,
    E,
    R,
    _dispatch_on_commit,
    _execution_move,
    _lock_execution,
    _lock_run,
    _run_move,
    event_append,
    run_settle,
)

logger = logging.getLogger(__name__)


# --- the engine's moves ----------------------------------------------------------------------


def execution_queue(*, execution_id: int, now: datetime | None = None) -> bool:
    """pending -> queued and hand the execution to the worker queue, atomically.

    Admission (under the run lock, then a per-key lock): the run is queued or running, the
    backoff time has come, the stage's and the run's parallelism ceilings and the concurrency
    key's limit have room. When it cannot start, the reason is stored on the execution for
    people to see.

    With the ORM broker the q2 message row is inserted in this same transaction, so either both
    the status and the message exist or neither does. Returns True if queued.
    """
    return execution_admit(execution_id=execution_id, now=now) == "queued"


def execution_admit(*, execution_id: int, now: datetime | None = None) -> str:
    """execution_queue, telling why not: "queued", "key" (its concurrency key is full),
    "run" (the run or stage is at its parallelism ceiling) or "skip" (not admissible now)."""
    from django_q.tasks import async_task

    now = now or timezone.now()
    with transaction.atomic():
        run, execution = _lock_execution(execution_id)
        if execution.status != E.PENDING or run.status not in (R.QUEUED, R.RUNNING):
            return "skip"
        if execution.not_before and execution.not_before > now:
            return "skip"
        blocked, which = _admission_blocker(run, execution)
        if blocked:
            if execution.waiting_reason != blocked:
                execution.waiting_reason = blocked
                execution.save(update_fields=["waiting_reason"])
            return which
        if execution.waiting_reason:
            execution.waiting_reason = ""
            execution.save(update_fields=["waiting_reason"])
        _execution_move(run, execution, E.QUEUED, reason="", actor=SYSTEM, now=now,
                        message=f"{execution.name}: queued for a worker.")
        async_task(
            "jobs.tasks.execution_run",
            execution.pk,
            task_name=f"execution-{execution.pk}",
            group=f"run-{run.pk}",
        )
    return "queued"


SLOT_STATUSES = (E.QUEUED, E.RUNNING)


def _admission_blocker(run: Run, execution: Execution) -> tuple[str, str]:
    """(why the execution cannot take a slot now, "run" or "key"), or ("", "") if it can.
    Call with the run locked."""
    stage_limit = int((execution.definition or {}).get("stage_max_parallel") or 0)
    if stage_limit:
        busy = run.executions.filter(stage_index=execution.stage_index,
                                     iteration=execution.iteration,
                                     status__in=SLOT_STATUSES).count()
        if busy >= stage_limit:
            return (f"waiting: stage {execution.stage} already has {busy} of {stage_limit} "
                    "executions running (max_parallel)", "run")
    max_parallel = int(run.task_snapshot.get("max_parallel") or 0)
    if max_parallel:
        busy = run.executions.filter(status__in=SLOT_STATUSES).count()
        if busy >= max_parallel:
            return (f"waiting: this run already has {busy} of {max_parallel} executions "
                    "running", "run")
    key = execution.concurrency_key
    if not key:
        return "", ""
    _lock_key(key)
    holders = list(
        Execution.objects.filter(concurrency_key=key, status__in=SLOT_STATUSES)
        .order_by("queued_at", "id").values_list("run_id", flat=True)[:5]
    )
    if len(holders) < execution.concurrency_limit:
        return "", ""
    held = ", ".join(f"run {r}" for r in holders)
    return (f"waiting for slot {key} (limit {execution.concurrency_limit}), held by {held}",
            "key")


def _lock_key(key: str) -> None:
    """Serialise admissions per concurrency key until commit. PostgreSQL: a transaction-scoped
    advisory lock (always taken after the row locks, so no cycle). SQLite: the IMMEDIATE
    transaction already serialises every writer."""

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", [key])


def execution_claim(*, execution_id: int, worker: str, now: datetime | None = None
                    ) -> Attempt | None:
    """queued -> running by compare-and-set and open the next Attempt.

    Returns None when the execution is not queued any more: a duplicate delivery of the same q2
    task, or a cancel that won the race. That is the normal way to lose, not an error.
    """
    now = now or timezone.now()
    with transaction.atomic():
        run_id = Execution.objects.filter(pk=execution_id).values_list("run_id", flat=True).first()
        if run_id is None:
            return None
        run = _lock_run(run_id)
        if run.status == R.PAUSED:
            # Paused after this was queued: give the slot back and wait for resume.
            execution = Execution.objects.select_for_update().get(pk=execution_id)
            if execution.status == E.QUEUED:
                execution.waiting_reason = "waiting: the run is paused"
                execution.save(update_fields=["waiting_reason"])
                _execution_move(run, execution, E.PENDING, reason="", actor=SYSTEM, now=now,
                                message=f"{execution.name}: not started, the run is paused.")
            return None
        claimed = Execution.objects.filter(pk=execution_id, status=E.QUEUED).update(
            status=E.RUNNING,
            attempt=F("attempt") + 1,
            worker=worker,
            heartbeat_at=now,
            started_at=now,
            exit_code=None,
            outcome="",
            error="",
        )
        if claimed == 0:
            return None
        execution = Execution.objects.get(pk=execution_id)
        attempt = Attempt.objects.create(
            execution=execution, number=execution.attempt, worker=worker, started_at=now
        )
        event_append(run.pk, "execution.started",
                     f"{execution.name}: attempt {attempt.number} started on {worker}.",
                     now=now, execution_id=execution.pk,
                     data={"attempt": attempt.number, "worker": worker})
        run_settle(run, now=now)
    return attempt


def execution_finish(
    *,
    execution_id: int,
    attempt_number: int,
    status: str,
    exit_code: int | None = None,
    outcome: str = "",
    error: str = "",
    result: Any = None,
    now: datetime | None = None,
) -> bool:
    """running -> a terminal status, written only by the holder of the current attempt.

    Fencing: if the execution has moved on (another attempt, or it was cancelled/reaped), the
    late write is rejected, recorded as an event, and False is returned.
    """
    now = now or timezone.now()
    with transaction.atomic():
        run, execution = _lock_execution(execution_id)
        if execution.attempt != attempt_number or execution.status != E.RUNNING:
            event_append(
                run.pk, "execution.stale_write_rejected",
                f"{execution.name}: a late result from attempt {attempt_number} was rejected; "
                f"the execution is {execution.status} at attempt {execution.attempt}.",
                now=now, execution_id=execution.pk,
                data={"attempt": attempt_number, "current_attempt": execution.attempt,
                      "status": status, "exit_code": exit_code},
            )
            return False
        if execution.cancel_requested_at and status != E.SUCCEEDED:
            # The stop was asked for: say who asked, not how the process died.
            status = E.CANCELLED
            outcome = "cancelled"
            error = execution.cancel_reason or error
        execution.exit_code = exit_code
        execution.outcome = outcome
        execution.error = error
        execution.result = result
        execution.save(update_fields=["exit_code", "outcome", "error", "result"])
        Attempt.objects.filter(execution=execution, number=attempt_number).update(
            finished_at=now, exit_code=exit_code, outcome=outcome, error=error
        )
        if _should_retry(run, execution, status, outcome):
            _execution_retry(run, execution, now=now, outcome=outcome, error=error)
        else:
            summary = f"{execution.name}: {ExecutionStatus(status).label.lower()}"
            if exit_code is not None:
                summary += f" (exit code {exit_code})"
            if error.strip():
                summary += f": {error.strip().splitlines()[0][:200]}"
            _execution_move(run, execution, status, reason="", actor=SYSTEM, now=now,
                            message=summary,
                            data={"attempt": attempt_number, "exit_code": exit_code,
                                  "outcome": outcome})
        run_settle(run, now=now)
        transaction.on_commit(_dispatch_on_commit)
    return True


LOST_WORKER_ATTEMPTS = 3


def retry_limit(run: Run, *, lost: bool) -> int:
    """Attempts allowed in all: the task's max_attempts; a lost worker always gets at least 3."""
    configured = int(run.task_snapshot.get("max_attempts") or 1)
    return max(configured, LOST_WORKER_ATTEMPTS) if lost else configured


def _should_retry(run: Run, execution: Execution, status: str, outcome: str) -> bool:
    if status in (E.SUCCEEDED, E.CANCELLED) or execution.cancel_requested_at:
        return False
    if run.status in RUN_TERMINAL:
        return False
    lost = outcome == "lease_expired"
    retry_on = run.task_snapshot.get("retry_on") or []
    if not lost and outcome not in retry_on:
        return False
    return execution.attempt < retry_limit(run, lost=lost)


def backoff_seconds(run: Run, attempt: int) -> int:
    """Delay before the retry that follows attempt `attempt` (1-based); the last value repeats."""
    schedule = run.task_snapshot.get("retry_backoff")
    if not isinstance(schedule, list) or not schedule:
        schedule = [60, 300, 900]
    return int(schedule[min(attempt, len(schedule)) - 1])


def _execution_retry(run: Run, execution: Execution, *, now: datetime, outcome: str,
                     error: str) -> None:
    """running -> pending with not_before = now + backoff: the attempt failed, tries remain."""
    from datetime import timedelta

    lost = outcome == "lease_expired"
    limit = retry_limit(run, lost=lost)
    delay = backoff_seconds(run, execution.attempt)
    execution.not_before = now + timedelta(seconds=delay)
    execution.waiting_reason = (
        f"retry {execution.attempt + 1} of {limit} at {execution.not_before:%Y-%m-%d %H:%M:%S} UTC"
    )
    execution.worker = ""
    execution.save(update_fields=["not_before", "waiting_reason", "worker"])
    first_line = (error.strip().splitlines() or [outcome])[0][:200]
    _execution_move(
        run, execution, E.PENDING, reason="", actor=SYSTEM, now=now,
        message=(f"{execution.name}: attempt {execution.attempt} of {limit} ended "
                 f"({outcome}: {first_line}); retrying in {delay} s."),
        data={"attempt": execution.attempt, "max_attempts": limit, "outcome": outcome,
              "next_try_at": execution.not_before.isoformat(), "delay_seconds": delay},
        event_kind="execution.retrying",
    )


def execution_heartbeat(*, execution_id: int, attempt_number: int,
                        now: datetime | None = None) -> str:
    """Refresh the lease of the current attempt.

    Returns "ok", "cancel" (someone asked it to stop: terminate the work, it ends cancelled) or
    "lost" (the attempt is no longer current: it was reaped or ended; stop, and expect the late
    result to be rejected).
    """
    now = now or timezone.now()
    updated = Execution.objects.filter(
        pk=execution_id, attempt=attempt_number, status=E.RUNNING
    ).update(heartbeat_at=now)
    if updated != 1:
        return "lost"
    return execution_stop_check(execution_id=execution_id, attempt_number=attempt_number)


def execution_stop_check(*, execution_id: int, attempt_number: int) -> str:
    """Read-only twin of execution_heartbeat, cheap enough to poll every second."""
    row = Execution.objects.filter(pk=execution_id).values(
        "status", "attempt", "cancel_requested_at").first()
    if row is None or row["status"] != E.RUNNING or row["attempt"] != attempt_number:
        return "lost"
    return "cancel" if row["cancel_requested_at"] else "ok"


def execution_requeue(*, execution_id: int, now: datetime, reason: str = "") -> bool:
    """Hand a queued execution that no worker claimed to the queue again. Safe even if the
    first message is still alive: whichever delivery claims first wins, the other no-ops."""
    from django_q.tasks import async_task

    with transaction.atomic():
        run, execution = _lock_execution(execution_id)
        if execution.status != E.QUEUED:
            return False
        waited = int((now - execution.queued_at).total_seconds()) if execution.queued_at else 0
        execution.queued_at = now
        execution.save(update_fields=["queued_at"])
        why = reason or f"no worker claimed it within {waited} s"
        event_append(run.pk, "execution.redelivered",
                     f"{execution.name}: {why}; handed to the queue again.", now=now,
                     execution_id=execution.pk)
        async_task("jobs.tasks.execution_run", execution.pk,
                   task_name=f"execution-{execution.pk}", group=f"run-{run.pk}")
    return True


def run_repair(*, run_id: int, now: datetime) -> bool:
    """Invariant 1 repair: settle a run whose executions have all ended. Returns True if the
    run was out of step (and records why)."""
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.is_terminal:
            return False
        statuses = list(run.executions.values_list("status", flat=True))
        if statuses and any(s not in EXECUTION_TERMINAL for s in statuses):
            return False
        event_append(run.pk, "reaper.repaired", "Repair: every execution of this run had ended "
                     "but the run had not; settling it now.", now=now)
        if not statuses:
            _run_move(run, R.FAILED, reason="the run has no executions", actor=SYSTEM, now=now)
        else:
            run_settle(run, now=now)
    return True
