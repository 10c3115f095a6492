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
from django.db.models import F
from django.utils import timezone

from runs.errors import NotFound, TransitionNotAllowed
from runs.models import (
    EXECUTION_TERMINAL,
    RUN_TERMINAL,
    Attempt,
    AuditLog,
    Event,
    Execution,
    ExecutionStatus,
    Run,
    RunStatus,
)

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
    from django.db import connection

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


def deadline_reason(run: Run) -> str:
    return f"the run's deadline ({run.deadline_at:%Y-%m-%d %H:%M:%S} UTC) passed"


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
