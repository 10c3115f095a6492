"""The state machine: the only place where a Run or Execution changes status.

Split by concern (core: tables, events, audit, generic moves and settling; engine: admission,
claim, finish, retries; controls: cancel, pause, resume, approvals; recovery: the reaper's
moves). Everything is imported from `runs.transitions`; see `core` for the rules every move
follows.
"""

from runs.transitions.controls import (
    _approval_resolve,
    _cancel_text,
    _execution_cancel_locked,
    approval_expire,
    execution_approve,
    execution_cancel,
    run_cancel,
    run_pause,
    run_resume,
)
from runs.transitions.core import (
    EXECUTION_ALLOWED,
    RUN_ALLOWED,
    SYSTEM,
    Actor,
    E,
    R,
    _execution_move,
    _lock_execution,
    _lock_run,
    _run_move,
    _run_sync_activity,
    audit_write,
    deadline_reason,
    event_append,
    execution_transition,
    run_settle,
    run_transition,
)
from runs.transitions.engine import (
    LOST_WORKER_ATTEMPTS,
    SLOT_STATUSES,
    backoff_seconds,
    execution_admit,
    execution_claim,
    execution_finish,
    execution_heartbeat,
    execution_queue,
    execution_requeue,
    execution_stop_check,
    retry_limit,
    run_repair,
)
from runs.transitions.recovery import lease_expire, run_deadline_expire

__all__ = [
    "EXECUTION_ALLOWED", "LOST_WORKER_ATTEMPTS", "RUN_ALLOWED", "SLOT_STATUSES", "SYSTEM",
    "Actor", "E", "R", "_approval_resolve", "_cancel_text", "_execution_cancel_locked",
    "_execution_move", "_lock_execution", "_lock_run", "_run_move", "_run_sync_activity",
    "approval_expire", "audit_write", "backoff_seconds", "deadline_reason", "event_append",
    "execution_admit", "execution_approve", "execution_cancel", "execution_claim",
    "execution_finish", "execution_heartbeat", "execution_queue", "execution_requeue",
    "execution_stop_check", "execution_transition", "lease_expire", "retry_limit",
    "run_cancel", "run_deadline_expire", "run_pause", "run_repair", "run_resume",
    "run_settle", "run_transition",
]  # fmt: skip
