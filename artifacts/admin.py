"""Staff views of artifacts and comparisons: read-only (they are made by workers); deleting
one removes its files from storage (artifacts.signals). Lists built for big tables
(runs.admin_lists): newest first by id, no date hierarchy (created_at has no index here)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from artifacts.models import Artifact, Comparison
from runs.admin import run_link
from runs.admin_lists import BigListAdmin, recent_values_filter

_EXECUTION_BLOBS = ("execution__definition", "execution__params", "execution__input",
                    "execution__result", "execution__error")


@admin.register(Artifact)
class ArtifactAdmin(BigListAdmin):
    list_display = ["id", "name", "run_shown", "execution", "attempt", "content_type", "size",
                    "created_at"]
    list_filter = [recent_values_filter("content_type", "content type")]
    search_fields = ["=id", "=run__id", "name", "=sha256"]
    list_select_related = ["execution"]
    list_defer = _EXECUTION_BLOBS
    sortable_by = ["id"]
    ordering = ["-id"]
    readonly_fields = [f.name for f in Artifact._meta.fields] + ["viewer"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="Run", ordering="run_id")
    def run_shown(self, obj: Artifact) -> str:
        return run_link(obj.run_id)

    @admin.display(description="Viewer")
    def viewer(self, obj: Artifact) -> str:
        return format_html('<a href="{}">open in the viewer</a>', obj.get_absolute_url())


@admin.register(Comparison)
class ComparisonAdmin(BigListAdmin):
    list_display = ["id", "artifact", "level", "ratio", "baseline_shown", "created_at"]
    list_filter = ["level"]
    search_fields = ["=artifact__run__id", "artifact__name"]
    list_select_related = ["artifact"]
    sortable_by = ["id"]
    ordering = ["-id"]
    readonly_fields = [f.name for f in Comparison._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="Baseline run")
    def baseline_shown(self, obj: Comparison) -> str:
        return run_link(obj.baseline_run_id) if obj.baseline_run_id else "-"
