"""Staff view of the worker registry and the reaper tick (read-only: workers write these)."""

from __future__ import annotations

from django.contrib import admin

from jobs.models import ReaperTick, WorkerProcess
from runs.admin import ReadOnlyAdmin  # written by workers; staff only read it


@admin.register(WorkerProcess)
class WorkerProcessAdmin(ReadOnlyAdmin):
    list_display = ["name", "host", "pid", "started_at", "last_seen_at", "draining",
                    "stopped_at"]
    list_filter = ["draining", "host"]
    search_fields = ["name", "host"]


@admin.register(ReaperTick)
class ReaperTickAdmin(ReadOnlyAdmin):
    list_display = ["id", "last_run_at"]
