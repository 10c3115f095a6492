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
from runs.transitions import execution_queue

logger = logging.getLogger(__name__)


def dispatch(*, now: datetime | None = None, limit: int = 500) -> int:
    """Queue admissible pending executions, highest priority then oldest first. Returns how
    many were queued."""
    now = now or timezone.now()
    candidates = list(
        Execution.objects.filter(
            status=ExecutionStatus.PENDING,
            run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING],
        )
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .order_by("-priority", "run_id", "position", "id")
        .values_list("pk", flat=True)[:limit]
    )
    queued = 0
    for execution_id in candidates:
        if execution_queue(execution_id=execution_id, now=now):
            queued += 1
    return queued


def dispatch_soon() -> None:
    """Dispatch after a commit; never lets a dispatch problem break the caller's request."""
    try:
        dispatch()
    except Exception:  # the periodic dispatch and the reaper will pick it up
        logger.exception("dispatch after commit failed; the next dispatch will retry")
