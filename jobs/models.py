"""The worker registry: one row per django-q2 worker process, refreshed while it lives.

Execution state itself lives on runs.Execution and runs.Attempt; this table only answers
"who is alive, since when, running what", and lets pages say "no worker alive".
"""

from __future__ import annotations

from django.db import models


class WorkerProcess(models.Model):
    # Same text as Execution.worker and Attempt.worker: "<SWITCHYARD_WORKER_ID or host>:<pid>".
    name = models.CharField(max_length=200, unique=True)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # SIGTERM received: finishing what it runs, taking nothing new.
    draining = models.BooleanField(default=False)

    class Meta:
        ordering = ["-last_seen_at"]
        verbose_name_plural = "worker processes"

    def __str__(self) -> str:
        return self.name


class ReaperTick(models.Model):
    """One row: when the reaper last ran. Workers' registry threads run the reaper when this is
    older than SWITCHYARD_REAP_SECONDS, claiming the tick with a conditional UPDATE so that one
    worker runs each pass. Busy workers still tick: the registry thread is not a q2 task."""

    last_run_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"reaper last ran at {self.last_run_at}"


class ReaperRepairCount(models.Model):
    """Repairs the reaper has made since the installation began, by kind (leases_expired,
    redelivered, deadlines, ...): the counters behind switchyard_reaper_repairs_total."""

    kind = models.CharField(max_length=40, unique=True)
    total = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.kind}: {self.total}"
