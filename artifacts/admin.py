"""Staff views of artifacts and comparisons: read-only (they are made by workers); deleting
one removes its files from storage (artifacts.signals)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from artifacts.models import Artifact, Comparison


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "run", "execution", "attempt", "content_type", "size",
                    "created_at"]
    list_filter = ["content_type"]
    search_fields = ["=id", "=run__id", "name", "sha256"]
    list_select_related = ["run", "execution"]
    readonly_fields = [f.name for f in Artifact._meta.fields] + ["viewer"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="Viewer")
    def viewer(self, obj: Artifact) -> str:
        return format_html('<a href="{}">open in the viewer</a>', obj.get_absolute_url())


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "artifact", "level", "ratio", "baseline_run", "created_at"]
    list_filter = ["level"]
    search_fields = ["=artifact__run__id", "artifact__name"]
    list_select_related = ["artifact", "baseline_run"]
    readonly_fields = [f.name for f in Comparison._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
