"""The staff back office: every model registered; events and the audit log are read-only."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from runs.models import (
    ApiToken,
    Attempt,
    AuditLog,
    Event,
    Execution,
    LogChunk,
    Membership,
    Project,
    Run,
    Task,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is append-only: nobody, superusers included, adds, changes or deletes it here."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__slug"]
    list_select_related = ["user", "project"]
    autocomplete_fields = ["user", "project"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "project", "kind", "enabled", "timeout_seconds", "updated_at"]
    list_filter = ["kind", "enabled", "project"]
    search_fields = ["slug", "name", "project__slug"]
    list_select_related = ["project"]
    autocomplete_fields = ["project"]


class ExecutionInline(admin.TabularInline):
    model = Execution
    extra = 0
    can_delete = False
    fields = ["name", "status", "attempt", "worker", "exit_code", "outcome", "started_at",
              "finished_at"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "project", "status", "trigger", "created_by", "created_at",
                    "finished_at"]
    list_filter = ["status", "trigger", "project"]
    search_fields = ["=id", "task__slug", "created_by__username", "idempotency_key"]
    date_hierarchy = "created_at"
    list_select_related = ["task", "task__project", "project", "created_by"]
    # Status moves only through runs.transitions; the admin shows them, never edits them.
    readonly_fields = ["project", "task", "task_snapshot", "params", "status", "status_reason",
                       "trigger", "created_by", "idempotency_key", "created_at", "started_at",
                       "finished_at", "last_event_seq", "page_link"]
    exclude = ["secret_params"]
    inlines = [ExecutionInline]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Run page")
    def page_link(self, obj: Run) -> str:
        return format_html('<a href="{}">timeline and logs</a>', obj.get_absolute_url())


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    readonly_fields = ["number", "worker", "started_at", "finished_at", "exit_code", "outcome",
                       "error"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "name", "status", "attempt", "worker", "heartbeat_at",
                    "exit_code"]
    list_filter = ["status"]
    search_fields = ["=id", "=run__id", "name", "worker"]
    list_select_related = ["run"]
    readonly_fields = [f.name for f in Execution._meta.fields]
    inlines = [AttemptInline]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdmin):
    list_display = ["execution", "number", "worker", "started_at", "finished_at", "exit_code",
                    "outcome"]
    list_select_related = ["execution"]
    search_fields = ["=execution__id", "worker"]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["run", "seq", "kind", "message", "actor", "created_at"]
    list_filter = ["kind"]
    search_fields = ["=run__id", "kind", "message"]
    list_select_related = ["run"]
    date_hierarchy = "created_at"


@admin.register(LogChunk)
class LogChunkAdmin(ReadOnlyAdmin):
    list_display = ["execution", "seq", "attempt", "stream", "line_count", "created_at"]
    list_filter = ["stream"]
    search_fields = ["=execution__id"]
    list_select_related = ["execution"]


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_label", "via", "action", "object_type", "object_id",
                    "project", "ip_address"]
    list_filter = ["via", "action", "object_type"]
    search_fields = ["actor_label", "action", "object_id"]
    list_select_related = ["project"]
    date_hierarchy = "created_at"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "user", "created_at", "expires_at", "last_used_at",
                    "revoked_at"]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    # The hash is useless to show and the secret is never stored: tokens are made by
    # `manage.py create_api_token` or the account page, which show the token once.
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    exclude = ["token_hash"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False
