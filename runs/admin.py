"""The staff back office: every model registered; events and the audit log are read-only.

Runs and executions are never edited here: their status moves only through `runs.transitions`
and re-runs through `runs.services.run_rerun`, which the admin actions (cancel, pause, resume,
re-run; approve and reject a pipeline stage) call one object at a time, like the pages and the
API do, so each move is locked, checked, and written with its event and audit row. Staff act as
maintainers, so they may decide any approval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from runs.errors import ApplicationError, NotFound
from runs.forms import APPROVAL_COMMENT_MAX_LENGTH, RERUN_MODES, approval_comment
from runs.models import (
    ApiToken,
    Attempt,
    AuditLog,
    Event,
    Execution,
    ExecutionStatus,
    LogChunk,
    Membership,
    Project,
    Run,
    Task,
)
from runs.services import run_delete, run_rerun
from runs.transitions import (
    Actor,
    execution_approve,
    execution_cancel,
    run_cancel,
    run_pause,
    run_resume,
)

# One warning per refused object up to this many; the rest are counted in one more line, so
# selecting a thousand ended runs does not bury the page in messages.
MAX_REFUSALS_LISTED = 20
MAX_IDS_LISTED = 30


def admin_actor(request: HttpRequest) -> Actor:
    """The Actor for audit rows of admin actions: the staff user, via admin."""
    return Actor(
        user=request.user,
        via="admin",
        label=request.user.get_username(),
        # Some servers leave REMOTE_ADDR empty, which an inet column rejects: store no address.
        ip_address=request.META.get("REMOTE_ADDR") or None,
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
    )


def _count(labels: list[str], noun: str) -> str:
    return f"{len(labels)} {noun}{'' if len(labels) == 1 else 's'}"


def _ids_text(labels: list[str]) -> str:
    shown = ", ".join(labels[:MAX_IDS_LISTED])
    more = len(labels) - MAX_IDS_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def apply_to_each(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    targets: Iterable[tuple[int, str]],
    move: Callable[[int, Actor], str],
    *,
    verb: str,
    noun: str,
    refused_text: str,
) -> None:
    """Apply `move(pk, actor)` to each (pk, label) target in its own transaction, and report.

    `move` returns "done" or another outcome word ("stopping": asked to stop, not ended yet).
    A refusal (the object ended or changed since the list was drawn) is a warning naming the
    object and the reason, never an error page; the other objects are still moved.
    """
    actor = admin_actor(request)
    outcomes: dict[str, list[str]] = {}
    refusals: list[str] = []
    for pk, label in targets:
        try:
            outcomes.setdefault(move(pk, actor), []).append(label)
        except ApplicationError as exc:  # TransitionNotAllowed, or NotFound if deleted since
            refusals.append(f"{label} {refused_text}: {exc.message}")
    if outcomes.get("done"):
        labels = outcomes["done"]
        model_admin.message_user(
            request, f"{verb} {_count(labels, noun)}: {_ids_text(labels)}.", messages.SUCCESS)
    if outcomes.get("stopping"):
        labels = outcomes["stopping"]
        model_admin.message_user(
            request,
            f"Stop requested for {_count(labels, noun)} still running: {_ids_text(labels)}. "
            f"{'They end' if len(labels) > 1 else 'It ends'} cancelled once the processes "
            "have stopped.",
            messages.SUCCESS,
        )
    for text in refusals[:MAX_REFUSALS_LISTED]:
        model_admin.message_user(request, text, messages.WARNING)
    if len(refusals) > MAX_REFUSALS_LISTED:
        model_admin.message_user(
            request, f"{len(refusals) - MAX_REFUSALS_LISTED} more were refused for the same "
            "kinds of reasons; filter the list by status to see them.", messages.WARNING)


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
    raw_id_fields = ["baseline_run"]


class ExecutionInline(admin.TabularInline):
    model = Execution
    extra = 0
    can_delete = False
    # A pipeline's executions read as stage, iteration, step and matrix cell; a plain run's
    # one execution leaves those blank.
    fields = ["name", "stage", "iteration", "step", "matrix", "status", "attempt", "worker",
              "exit_code", "outcome", "started_at", "finished_at"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "project", "status", "visual_diff", "trigger", "created_by",
                    "created_at", "finished_at"]
    list_filter = ["status", "visual_diff", "trigger", "project"]
    search_fields = ["=id", "task__slug", "created_by__username", "idempotency_key"]
    date_hierarchy = "created_at"
    list_select_related = ["task", "task__project", "project", "created_by"]
    # Status moves only through runs.transitions; the admin shows them, never edits them.
    readonly_fields = ["project", "task", "task_snapshot", "params", "status", "status_reason",
                       "trigger", "created_by", "idempotency_key", "created_at", "started_at",
                       "finished_at", "deadline_at", "rerun_of", "rerun_mode",
                       "pipeline_state", "last_event_seq", "visual_diff", "page_link"]
    exclude = ["secret_params"]
    inlines = [ExecutionInline]
    actions = ["cancel_runs", "pause_runs", "resume_runs", "rerun_runs_all", "rerun_runs_failed",
               "mark_baseline", "delete_runs"]

    @admin.action(description="Mark as the baseline of its task", permissions=["change"])
    def mark_baseline(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        from artifacts.services import baseline_set

        targets = self._targets(queryset)
        tasks = queryset.values_list("task_id", flat=True)
        if len(set(tasks)) != len(targets):
            self.message_user(request, "Select at most one run per task: a task has one "
                              "baseline.", messages.ERROR)
            return

        def move(pk: int, actor: Actor) -> str:
            baseline_set(Run.objects.get(pk=pk), actor=actor)
            return "done"

        apply_to_each(self, request, targets, move, verb="Marked as baseline", noun="run",
                      refused_text="not marked")

    def get_actions(self, request: HttpRequest) -> dict:
        # Django's bulk delete refuses the whole selection (403) if one run may not be
        # deleted; ours deletes the others and says which were refused and why.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Delete selected finished runs (with logs and artifacts)",
                  permissions=["delete"])
    def delete_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self.delete_queryset(request, queryset)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        # Through the service: a run still going or a task's baseline is refused, and the
        # deletion is audited. Files leave storage with their rows (artifacts.signals).
        def move(pk: int, actor: Actor) -> str:
            run_delete(Run.objects.get(pk=pk), actor=actor)
            return "done"

        apply_to_each(self, request, self._targets(queryset), move, verb="Deleted",
                      noun="run", refused_text="not deleted")

    def has_delete_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        # A run still going, or a task's baseline, has no delete button; the bulk action
        # refuses them one by one through the service.
        if obj is not None and (not obj.is_terminal
                                or Task.objects.filter(baseline_run=obj).exists()):
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Run) -> None:
        run_delete(obj, actor=admin_actor(request))

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @staticmethod
    def _targets(queryset: QuerySet[Run]) -> list[tuple[int, str]]:
        # Ids only: the rows are locked and re-read by each transition anyway.
        return [(pk, f"Run #{pk}") for pk in queryset.order_by("pk").values_list("pk", flat=True)]

    @admin.action(description="Cancel selected runs", permissions=["change"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        def move(pk: int, actor: Actor) -> str:
            return "done" if run_cancel(run_id=pk, actor=actor).is_terminal else "stopping"

        apply_to_each(self, request, self._targets(queryset), move,
                      verb="Cancelled", noun="run", refused_text="not cancelled")

    @admin.action(description="Pause selected runs", permissions=["change"])
    def pause_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        def move(pk: int, actor: Actor) -> str:
            run_pause(run_id=pk, actor=actor)
            return "done"

        apply_to_each(self, request, self._targets(queryset), move,
                      verb="Paused", noun="run", refused_text="not paused")

    @admin.action(description="Resume selected runs", permissions=["change"])
    def resume_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        def move(pk: int, actor: Actor) -> str:
            run_resume(run_id=pk, actor=actor)
            return "done"

        apply_to_each(self, request, self._targets(queryset), move,
                      verb="Resumed", noun="run", refused_text="not resumed")

    @admin.action(description="Re-run selected runs (all)", permissions=["change"])
    def rerun_runs_all(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._rerun(request, queryset, "all")

    @admin.action(description="Re-run selected runs (failed only)", permissions=["change"])
    def rerun_runs_failed(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._rerun(request, queryset, "failed")

    def _rerun(self, request: HttpRequest, queryset: QuerySet[Run], mode: str) -> None:
        created: list[tuple[int, int]] = []  # (old, new)

        def move(pk: int, actor: Actor) -> str:
            run = Run.objects.select_related("task").filter(pk=pk).first()
            if run is None:
                raise NotFound(f"Run {pk} no longer exists.")
            new = run_rerun(run=run, mode=mode, actor=actor)
            created.append((pk, new.pk))
            return "done"

        apply_to_each(self, request, self._targets(queryset), move,
                      verb="Re-ran", noun="run",
                      refused_text="not re-run")
        if created:
            # Links to the new runs' pages, where they are watched; bounded like the ids.
            links = format_html_join(
                ", ", '<a href="{}">run #{}</a> (of #{})',
                ((reverse("run_detail", args=[new]), new, old)
                 for old, new in created[:MAX_IDS_LISTED]))
            more = len(created) - MAX_IDS_LISTED
            self.message_user(request, format_html(
                "New {} ({}): {}{}.", "runs" if len(created) > 1 else "run", RERUN_MODES[mode],
                links, f" and {more} more" if more > 0 else ""), messages.SUCCESS)

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
    # Status first: with the pipeline columns the row is wide, and status is what staff scan.
    list_display = ["id", "run", "status", "stage", "iteration", "step", "name", "attempt",
                    "worker", "exit_code"]
    list_filter = ["status", "stage"]
    search_fields = ["=id", "=run__id", "name", "stage", "step", "worker"]
    list_select_related = ["run"]
    readonly_fields = [f.name for f in Execution._meta.fields]
    inlines = [AttemptInline]
    actions = ["cancel_executions", "approve_executions", "reject_executions"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Cancel selected executions", permissions=["change"])
    def cancel_executions(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        targets = [
            (pk, f"Execution #{pk} ({name}) of run #{run_id}")
            for pk, name, run_id in queryset.order_by("pk").values_list("pk", "name", "run_id")
        ]

        def move(pk: int, actor: Actor) -> str:
            done = execution_cancel(execution_id=pk, actor=actor)
            return "done" if done.is_terminal else "stopping"

        apply_to_each(self, request, targets, move,
                      verb="Cancelled", noun="execution", refused_text="not cancelled")

    @admin.action(description="Approve selected", permissions=["change"])
    def approve_executions(self, request: HttpRequest, queryset: QuerySet[Execution]
                           ) -> TemplateResponse | None:
        return self._decide(request, queryset, approve=True)

    @admin.action(description="Reject selected", permissions=["change"])
    def reject_executions(self, request: HttpRequest, queryset: QuerySet[Execution]
                          ) -> TemplateResponse | None:
        return self._decide(request, queryset, approve=False)

    def _decide(self, request: HttpRequest, queryset: QuerySet[Execution], *, approve: bool
                ) -> TemplateResponse | None:
        """First a page that lists what is decided and takes an optional comment (like
        Django's delete confirmation); its submit comes back here with post=yes."""
        action = "approve_executions" if approve else "reject_executions"
        rows = [(pk, name, run_id, ExecutionStatus(status).label) for pk, name, run_id, status
                in queryset.order_by("pk").values_list("pk", "name", "run_id", "status")]
        if request.POST.get("post") != "yes":
            return TemplateResponse(request, "admin/runs/execution/approval_confirmation.html", {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Approve stages" if approve else "Reject stages",
                "approve": approve,
                "action": action,
                "rows": rows,
                "waiting": sum(1 for row in rows
                               if row[3] == ExecutionStatus.WAITING_APPROVAL.label),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "comment_max_length": APPROVAL_COMMENT_MAX_LENGTH,
            })
        comment, problem = approval_comment(request.POST)
        if problem:
            self.message_user(request, f"Nothing was decided. {problem}", messages.ERROR)
            return None
        targets = [(pk, f"Execution #{pk} ({name}) of run #{run_id}")
                   for pk, name, run_id, _status in rows]

        def move(pk: int, actor: Actor) -> str:
            execution_approve(execution_id=pk, actor=actor, approve=approve, comment=comment)
            return "done"

        apply_to_each(self, request, targets, move, verb="Approved" if approve else "Rejected",
                      noun="stage", refused_text="not approved" if approve else "not rejected")
        return None


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

from runs import admin_schedules  # noqa: E402, F401  registers ScheduleAdmin
