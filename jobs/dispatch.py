"""Dispatch: promote admissible pending executions to queued and hand them to the workers.

Safe to call from anywhere, any number of times, concurrently: each promotion is a locked
pending -> queued transition (runs.transitions.execution_queue) that re-checks admission (run
pause, backoff, run parallelism, concurrency key slots) and does nothing if someone else already
promoted the execution. Called on launch commit, after every execution ends, and periodically.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from runs.models import Execution, ExecutionStatus, RunStatus
from runs.transitions import execution_admit

logger = logging.getLogger(__name__)


def dispatch(*, now: datetime | None = None) -> int:
    """Queue admissible pending executions, highest priority then oldest first. Returns how
    many were queued.

    Every pending execution is looked at (no cut-off that would hide admissible work behind
    blocked work), but one found blocked by a full concurrency key or a run/stage at its
    parallelism ceiling makes the rest of that key's or run's executions skip this pass, so a
    thousand executions waiting on one key cost one locked check, not a thousand.
    """
    now = now or timezone.now()
    candidates = list(
        Execution.objects.filter(
            status=ExecutionStatus.PENDING,
            run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING],
        )
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .order_by("-priority", "run_id", "position", "id")
        .values_list("pk", "run_id", "concurrency_key", "stage_index")
    )
    queued = 0
    full_keys: set[str] = set()
    full_runs: set[tuple[int, int]] = set()
    for execution_id, run_id, key, stage in candidates:
        if (key and key in full_keys) or (run_id, stage) in full_runs:
            continue
        verdict = execution_admit(execution_id=execution_id, now=now)
        if verdict == "queued":
            queued += 1
        elif verdict == "key":
            full_keys.add(key)
        elif verdict == "run":
            full_runs.add((run_id, stage))
    return queued


def dispatch_soon() -> None:
    """Dispatch after a commit; never lets a dispatch problem break the caller's request."""
    try:
        dispatch()
    except Exception:  # the periodic dispatch and the reaper will pick it up
        logger.exception("dispatch after commit failed; the next dispatch will retry")
