"""Reads for the workers and queue page of the back office (/admin/workers/): live workers and
what each one runs, queue depth per status, the oldest waiting executions with why each waits,
concurrency slots with their holders, the reaper's last pass and django-q2's broker queue.

Every read here is bounded (a LIMIT, or a GROUP BY over the open statuses, which are indexed),
so the page costs the same number of queries however many runs the installation keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Max, Q
from django.utils import timezone

from jobs.models import ReaperTick, WorkerProcess
from runs.models import Execution, ExecutionStatus, Run, RunStatus
from runs.transitions import SLOT_STATUSES

E = ExecutionStatus

# Execution statuses that are still work to do, in the order a page shows them.
OPEN_EXECUTION_STATUSES = (E.PENDING, E.QUEUED, E.RUNNING, E.WAITING_APPROVAL)
OPEN_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.WAITING)

# Workers that stopped or went silent within this window are still listed, as gone.
GONE_WINDOW = timedelta(hours=1)
MAX_WORKERS = 100
MAX_RUNNING = 200
MAX_WAITING = 10
MAX_SLOT_HOLDERS = 500
# jobs/migrations/0003 creates the reaper's tick row dated 2000-01-01: no pass yet.
NEVER_REAPED_YEAR = 2000

# Only the columns the page shows: executions carry JSON (definition, params, input, result)
# and runs their task snapshot, none of which the page needs.
_EXECUTION_COLUMNS = ("id", "name", "stage", "step", "status", "attempt", "worker", "not_before",
                      "concurrency_key", "concurrency_limit", "waiting_reason", "heartbeat_at",
                      "cancel_requested_at", "created_at", "queued_at", "started_at", "run",
                      "run__status", "run__task", "run__project", "run__task__slug",
                      "run__project__slug")


def _executions():
    return (Execution.objects.select_related("run", "run__task", "run__project")
            .only(*_EXECUTION_COLUMNS))


@dataclass
class WorkerRow:
    worker: WorkerProcess
    alive: bool
    running: list[Execution] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.worker.stopped_at:
            return "stopped"
        if not self.alive:
            return "silent"
        return "draining" if self.worker.draining else "alive"


@dataclass
class SlotRow:
    key: str
    limit: int
    holders: list[Execution]
    waiting: int

    @property
    def full(self) -> bool:
        return len(self.holders) >= self.limit


@dataclass
class QueueOverview:
    now: datetime
    workers: list[WorkerRow]
    alive_count: int
    # Running executions whose worker is not alive: the reaper expires their lease.
    orphaned: list[Execution]
    running_total: int
    execution_depth: dict[str, int]
    backoff_count: int
    run_depth: dict[str, int]
    waiting: list[Execution]
    slots: list[SlotRow]
    reaper_last_run_at: datetime | None
    reaper_overdue: bool
    broker: dict[str, int]

    @property
    def execution_rows(self) -> list[tuple[str, str, int]]:
        """(status, label, count) per open execution status, for display."""
        return [(s, E(s).label, self.execution_depth[s]) for s in OPEN_EXECUTION_STATUSES]

    @property
    def run_rows(self) -> list[tuple[str, str, int]]:
        return [(s, RunStatus(s).label, self.run_depth[s]) for s in OPEN_RUN_STATUSES]


def worker_rows(*, now: datetime) -> list[WorkerRow]:
    """Workers alive now, then those that stopped or went silent within GONE_WINDOW."""
    alive_cutoff = now - timedelta(seconds=settings.SWITCHYARD_WORKER_DEAD_SECONDS)
    rows = WorkerProcess.objects.filter(last_seen_at__gte=now - GONE_WINDOW).order_by(
        "-last_seen_at")[:MAX_WORKERS]
    listed = [WorkerRow(worker=w, alive=w.stopped_at is None and w.last_seen_at >= alive_cutoff)
              for w in rows]
    return sorted(listed, key=lambda r: (not r.alive, r.worker.name))


def execution_depth(*, now: datetime) -> tuple[dict[str, int], int]:
    """Executions per open status, and how many pending ones wait for a retry backoff."""
    rows = (Execution.objects.filter(status__in=OPEN_EXECUTION_STATUSES).values("status")
            .annotate(n=Count("id"), backoff=Count("id", filter=Q(not_before__gt=now)))
            .order_by())
    depth = {status: 0 for status in OPEN_EXECUTION_STATUSES}
    backoff = 0
    for row in rows:
        depth[row["status"]] = row["n"]
        if row["status"] == E.PENDING:
            backoff = row["backoff"]
    return depth, backoff


def run_depth() -> dict[str, int]:
    """Runs per open status."""
    rows = (Run.objects.filter(status__in=OPEN_RUN_STATUSES).values("status")
            .annotate(n=Count("id")).order_by())
    depth = {status: 0 for status in OPEN_RUN_STATUSES}
    depth.update({row["status"]: row["n"] for row in rows})
    return depth


def seconds_text(seconds: float) -> str:
    """An age or a wait to the second: "12 s", "3 min 5 s", "2 h 10 min", "3 d 4 h"."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def why_waiting(execution: Execution, *, now: datetime, alive: int, busy: int,
                held_by: list[int] | None = None) -> str:
    """Why a pending or queued execution has not started, in words staff can act on.

    `alive` is the number of live workers, `busy` how many executions run now, `held_by` the
    runs whose executions hold a slot of the execution's concurrency key. Dispatch writes the
    reason on the first execution it finds blocked by a full key and skips the rest of that
    key, so the others are told from `held_by`.
    """
    run = execution.run
    reasons = []
    if run.status == RunStatus.PAUSED:
        reasons.append("the run is paused: resume it to let this start")
    elif run.status == RunStatus.WAITING:
        reasons.append("the run waits for an approval")
    if execution.status == E.PENDING:
        if execution.not_before and execution.not_before > now:
            wait = seconds_text((execution.not_before - now).total_seconds())
            reasons.append(f"retry backoff: may start in {wait} "
                           f"(at {execution.not_before:%H:%M:%S} UTC)")
        if execution.waiting_reason:
            reasons.append(execution.waiting_reason)
        elif (execution.concurrency_key and held_by is not None
              and len(held_by) >= execution.concurrency_limit):
            runs = ", ".join(f"run {r}" for r in held_by[:5])
            reasons.append(f"waiting for slot {execution.concurrency_key} (limit "
                           f"{execution.concurrency_limit}), held by {runs}")
        if not reasons and alive:
            reasons.append("admissible: the next dispatch (on any launch, any execution end "
                           f"and every {settings.SWITCHYARD_REAP_SECONDS:g} s) queues it")
    elif execution.status == E.QUEUED:
        since = execution.queued_at or execution.created_at
        waited = (now - since).total_seconds()
        text = f"in the worker queue for {seconds_text(waited)}"
        if alive and busy >= alive:
            text += f"; all {alive} workers are busy"
        if waited > settings.SWITCHYARD_REDELIVER_SECONDS:
            text += ("; no worker claimed it, so the reaper hands it to the queue again")
        reasons.append(text)
    if not alive:
        reasons.append("no worker alive: start one with manage.py qcluster")
    return "; ".join(reasons)


def slot_holders(key: str) -> list[int]:
    """The runs whose executions hold a slot of concurrency key `key`, longest first."""
    return list(Execution.objects.filter(concurrency_key=key, status__in=SLOT_STATUSES)
                .order_by("queued_at", "id").values_list("run_id", flat=True)[:MAX_SLOT_HOLDERS])


def waiting_oldest(*, now: datetime, alive: int, busy: int, slots: list[SlotRow]
                   ) -> list[Execution]:
    """The oldest pending or queued executions (the first is the oldest), each with
    `why_waiting` set."""
    rows = list(_executions().filter(status__in=(E.PENDING, E.QUEUED)).order_by("id")
                [:MAX_WAITING])
    held = {slot.key: [e.run_id for e in slot.holders] for slot in slots}
    for execution in rows:
        execution.why_waiting = why_waiting(execution, now=now, alive=alive, busy=busy,
                                            held_by=held.get(execution.concurrency_key, []))
    return rows


def concurrency_slots() -> list[SlotRow]:
    """Every concurrency key in use or waited for: its limit, the executions holding a slot
    (queued or running), and how many pending executions wait for one."""
    holders = list(_executions().filter(status__in=SLOT_STATUSES).exclude(concurrency_key="")
                   .order_by("concurrency_key", "queued_at", "id")[:MAX_SLOT_HOLDERS])
    waiting = (Execution.objects.filter(status=E.PENDING).exclude(concurrency_key="")
               .values("concurrency_key")
               .annotate(n=Count("id"), limit=Max("concurrency_limit")).order_by())
    slots: dict[str, SlotRow] = {}
    for execution in holders:
        row = slots.setdefault(execution.concurrency_key, SlotRow(
            key=execution.concurrency_key, limit=execution.concurrency_limit, holders=[],
            waiting=0))
        row.holders.append(execution)
        # The limit is fixed on each execution at launch; if the task changed since, the
        # largest is the one admission may still be honouring.
        row.limit = max(row.limit, execution.concurrency_limit)
    for entry in waiting:
        row = slots.setdefault(entry["concurrency_key"], SlotRow(
            key=entry["concurrency_key"], limit=entry["limit"], holders=[], waiting=0))
        row.waiting = entry["n"]
    return sorted(slots.values(), key=lambda r: (not r.full, -r.waiting, r.key))


def broker_depth(*, now: datetime) -> dict[str, int]:
    """django-q2's ORM broker: messages waiting for a worker, and messages a worker has taken
    (locked until its retry time), plus the task results q2 keeps."""
    from django_q.models import Failure, OrmQ, Schedule, Success

    queue = OrmQ.objects.aggregate(waiting=Count("id", filter=Q(lock__lte=now)),
                                   taken=Count("id", filter=Q(lock__gt=now)))
    return {"waiting": queue["waiting"], "taken": queue["taken"],
            "failed": Failure.objects.count(), "succeeded": Success.objects.count(),
            "schedules": Schedule.objects.count()}


def _reaper_overdue(workers: list[WorkerRow], last_reap: datetime | None, *, now: datetime,
                    every: timedelta) -> bool:
    """Workers run the reaper (jobs.reaper.reap_if_due): it is overdue when one has been alive
    for three intervals and no pass happened in the last three."""
    grace = now - 3 * every
    if not any(row.alive and row.worker.started_at < grace for row in workers):
        return False
    return last_reap is None or last_reap < grace


def queue_overview(*, now: datetime | None = None) -> QueueOverview:
    """Everything the workers and queue page shows, in a fixed number of queries."""
    now = now or timezone.now()
    workers = worker_rows(now=now)
    alive = sum(1 for row in workers if row.alive)
    running = list(_executions().filter(status=E.RUNNING).order_by("started_at", "id")
                   [:MAX_RUNNING])
    by_name = {row.worker.name: row for row in workers}
    orphaned = []
    for execution in running:
        row = by_name.get(execution.worker)
        if row is not None and row.alive:
            row.running.append(execution)
        else:
            orphaned.append(execution)
    depth, backoff = execution_depth(now=now)
    slots = concurrency_slots()
    tick = ReaperTick.objects.order_by("pk").first()
    last_reap = tick.last_run_at if tick else None
    if last_reap is not None and last_reap.year <= NEVER_REAPED_YEAR:
        last_reap = None
    reap_every = timedelta(seconds=settings.SWITCHYARD_REAP_SECONDS)
    return QueueOverview(
        now=now,
        workers=workers,
        alive_count=alive,
        orphaned=orphaned,
        running_total=depth[E.RUNNING],
        execution_depth=depth,
        backoff_count=backoff,
        run_depth=run_depth(),
        waiting=waiting_oldest(now=now, alive=alive, busy=depth[E.RUNNING], slots=slots),
        slots=slots,
        reaper_last_run_at=last_reap,
        reaper_overdue=_reaper_overdue(workers, last_reap, now=now, every=reap_every),
        broker=broker_depth(now=now),
    )
