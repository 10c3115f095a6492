"""Staff view of the worker registry and the reaper tick (read-only: workers write these)."""

from __future__ import annotations

from django.contrib import admin

from jobs.models import ReaperTick, WorkerProcess

# Django would say "Worker processs"; set here rather than in Meta, where it would need a
# migration of its own (fold it into the next jobs migration).
WorkerProcess._meta.verbose_name_plural = "worker processes"


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WorkerProcess)
class WorkerProcessAdmin(ReadOnly):
    list_display = ["name", "host", "pid", "started_at", "last_seen_at", "draining",
                    "stopped_at"]
    list_filter = ["draining", "host"]
    search_fields = ["name", "host"]


@admin.register(ReaperTick)
class ReaperTickAdmin(ReadOnly):
    list_display = ["id", "last_run_at"]
