"""The reaper: finds what a crash, a lost message or a missed wake-up left behind, repairs it,
and explains each repair as an event in the run's timeline.

- running executions whose lease (heartbeat) expired: attempt ends `lease_expired`, retried
  (a lost worker always retries) or failed; their concurrency slot is freed with them;
- queued executions no worker claimed for a while: handed to the queue again (a duplicate
  delivery is harmless: the claim is compare-and-set);
- approvals past their timeout: resolved as the stage says (reject by default);
- runs past their deadline: stopped and ended timed_out;
- runs whose executions have all ended but that are not terminal: settled (invariant 1);
- command processes on this machine whose attempt is over (grandchildren of a dead worker):
  killed (jobs.orphans);
- webhook deliveries whose retry is due: queued again (hooks.tasks);
- schedules whose slot is due: launched once per slot (runs.schedules);
- then dispatch, which also starts retries whose backoff has elapsed.

Runs every SWITCHYARD_REAP_SECONDS from the workers' registry threads (reap_if_due: one worker
wins each tick, and busy workers still tick), as a minute q2 schedule as a fallback, and as
`manage.py reap`; takes `now=` for tests.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from jobs.dispatch import dispatch
from jobs.orphans import orphans_kill
from runs.models import EXECUTION_TERMINAL, RUN_TERMINAL, Execution, ExecutionStatus, Run
from runs.transitions import (
    approval_expire,
    execution_requeue,
    lease_expire,
    run_deadline_expire,
    run_repair,
)

logger = logging.getLogger(__name__)


@dataclass
class ReapReport:
    leases_expired: int = 0
    redelivered: int = 0
    deadlines: int = 0
    approvals_expired: int = 0
    orphans_killed: int = 0
    webhooks_queued: int = 0
    repaired: int = 0
    schedules_fired: int = 0
    schedules_skipped: int = 0
    dispatched: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def reap(*, now: datetime | None = None) -> ReapReport:
    """One pass of every repair. Safe to run concurrently with workers and other reapers."""
    now = now or timezone.now()
    report = ReapReport()
    lease = settings.SWITCHYARD_LEASE_SECONDS
    stale = now - timedelta(seconds=lease)
    for execution_id in Execution.objects.filter(
        status=ExecutionStatus.RUNNING
    ).filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True)).values_list(
        "pk", flat=True
    ):
        if lease_expire(execution_id=execution_id, now=now, lease_seconds=lease):
            report.leases_expired += 1

    unclaimed = now - timedelta(seconds=settings.SWITCHYARD_REDELIVER_SECONDS)
    for execution_id in Execution.objects.filter(
        status=ExecutionStatus.QUEUED, queued_at__lt=unclaimed
    ).values_list("pk", flat=True):
        if execution_requeue(execution_id=execution_id, now=now):
            report.redelivered += 1

    for execution_id in Execution.objects.filter(
        status=ExecutionStatus.WAITING_APPROVAL, not_before__lte=now
    ).values_list("pk", flat=True):
        if approval_expire(execution_id=execution_id, now=now):
            report.approvals_expired += 1

    for run_id in Run.objects.exclude(status__in=RUN_TERMINAL).filter(
        deadline_at__lte=now
    ).values_list("pk", flat=True):
        if run_deadline_expire(run_id=run_id, now=now):
            report.deadlines += 1

    out_of_step = (
        Run.objects.exclude(status__in=RUN_TERMINAL)
        .annotate(
            total=Count("executions"),
            open=Count("executions", filter=~Q(executions__status__in=EXECUTION_TERMINAL)),
        )
        .filter(open=0)
        .values_list("pk", flat=True)
    )
    for run_id in out_of_step:
        if run_repair(run_id=run_id, now=now):
            report.repaired += 1

    report.orphans_killed = orphans_kill()
    from hooks.tasks import deliveries_due_send

    report.webhooks_queued = deliveries_due_send(now=now)
    from runs.schedules import schedules_fire

    fired = schedules_fire(now=now)
    report.schedules_fired, report.schedules_skipped = fired.fired, fired.skipped
    report.dispatched = dispatch(now=now)
    if any(v for k, v in report.as_dict().items() if k != "dispatched"):
        logger.info("reaper: %s", report.as_dict())
        _repairs_count(report)
    return report


NOT_REPAIRS = frozenset({"dispatched", "schedules_fired", "schedules_skipped"})


def _repairs_count(report: ReapReport) -> None:
    """Add this pass's repairs to the running totals (metrics)."""
    from django.db.models import F

    from jobs.models import ReaperRepairCount

    for kind, count in report.as_dict().items():
        if kind in NOT_REPAIRS or not count:
            continue
        if not ReaperRepairCount.objects.filter(kind=kind).update(total=F("total") + count):
            row, created = ReaperRepairCount.objects.get_or_create(
                kind=kind, defaults={"total": count})
            if not created:  # another reaper created it between our UPDATE and INSERT
                ReaperRepairCount.objects.filter(pk=row.pk).update(total=F("total") + count)


def reap_if_due(*, now: datetime | None = None) -> ReapReport | None:
    """Run a reaper pass if none ran in the last SWITCHYARD_REAP_SECONDS, anywhere. Called by
    every worker's registry thread; the conditional UPDATE lets exactly one of them win."""
    from jobs.models import ReaperTick

    now = now or timezone.now()
    due = now - timedelta(seconds=settings.SWITCHYARD_REAP_SECONDS)
    won = ReaperTick.objects.filter(pk=1, last_run_at__lt=due).update(last_run_at=now)
    if not won:
        _tick, created = ReaperTick.objects.get_or_create(pk=1, defaults={"last_run_at": now})
        if not created:
            return None
    return reap(now=now)
