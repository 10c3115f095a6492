"""The staff back office for runs and their history: runs, executions, attempts, events, log
chunks and the audit log (projects, members, tasks and tokens: `runs.admin_projects`).

Runs and executions are never edited here: their status moves only through `runs.transitions`
and re-runs through `runs.services.run_rerun`, which the admin actions (cancel, pause, resume,
re-run; approve and reject a pipeline stage) call one object at a time, like the pages and the
API do, so each move is locked, checked, and written with its event and audit row. Staff act as
maintainers, so they may decide any approval. History (attempts, events, log chunks, the audit
log) is read-only for everyone, superusers included.

The lists are built for big tables (`runs.admin_lists`): bounded counts, no scanning filters,
sorting by indexed columns only, related rows joined, heavy columns left out.
"""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from runs import admin_projects  # noqa: F401  registers projects, members, tasks, tokens
from runs.admin_actions import MAX_IDS_LISTED, admin_actor, apply_to_each
from runs.admin_lists import BigListAdmin, recent_values_filter
from runs.errors import NotFound
from runs.forms import APPROVAL_COMMENT_MAX_LENGTH, RERUN_MODES, approval_comment
from runs.models import (
    Attempt,
    AuditLog,
    Event,
    Execution,
    ExecutionStatus,
    LogChunk,
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

# hooks.admin and artifacts.admin use these too.
__all__ = ["ReadOnlyAdmin", "admin_actor", "apply_to_each"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is append-only: nobody, superusers included, adds, changes or deletes it here."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def json_block(value: object) -> str:
    """JSON for reading on a page: indented, in a box that scrolls rather than stretches."""
    return format_html('<pre class="sy-json-block">{}</pre>',
                       json.dumps(value, indent=2, ensure_ascii=False, default=str))


def run_link(run_id: int, text: str = "") -> str:
    """A link to a run's admin page, from its id alone (no query for the run)."""
    return format_html('<a href="{}">{}</a>', reverse("admin:runs_run_change", args=[run_id]),
                       text or f"Run #{run_id}")


class VisualDiffFilter(admin.SimpleListFilter):
    """Fixed choices: the column has no `choices`, and Django's default filter for it would
    read every distinct value of the runs table on each page."""

    title = "visual diff"
    parameter_name = "visual_diff"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        from artifacts.models import DiffLevel

        return [("-", "Not compared"), *DiffLevel.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        if self.value():
            return queryset.filter(visual_diff="" if self.value() == "-" else self.value())
        return queryset


class TaskFilter(admin.RelatedFieldListFilter):
    """Tasks by project/slug in one query (the default reads each task's project)."""

    def field_choices(self, field, request: HttpRequest, model_admin: admin.ModelAdmin
                      ) -> list[tuple]:
        return [(pk, f"{project}/{slug}") for pk, project, slug in Task.objects.order_by(
            "project__slug", "slug").values_list("pk", "project__slug", "slug")]


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

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        return super().get_queryset(request).defer("definition", "params", "input", "result")


@admin.register(Run)
class RunAdmin(BigListAdmin):
    # The task column names the project too (project/slug).
    list_display = ["id", "task", "status", "visual_diff", "trigger", "created_by",
                    "created_at", "duration_shown"]
    list_filter = ["status", VisualDiffFilter, "trigger", "project", ("task", TaskFilter)]
    search_fields = ["=id", "task__slug", "created_by__username", "idempotency_key"]
    date_hierarchy = "created_at"
    list_select_related = ["task", "task__project", "project", "created_by"]
    list_defer = ("task_snapshot", "params", "secret_params", "pipeline_state")
    sortable_by = ["id", "status", "created_at"]
    # Status moves only through runs.transitions: the page shows a run, never edits it (the
    # actions above and the delete button are the only writes; see has_change_permission).
    fieldsets = [
        (None, {"fields": ["task", "project", "status", "status_reason", "page_link", "trigger",
                           "created_by", "rerun_of", "rerun_mode", "visual_diff"]}),
        ("Times", {"fields": ["created_at", "started_at", "finished_at", "duration_shown",
                              "deadline_at"]}),
        ("Parameters and definition", {"fields": ["params_shown", "idempotency_key",
                                                  "pipeline_state_shown", "last_event_seq",
                                                  "snapshot_shown"]}),
        ("Attempts", {"fields": ["attempts_table"]}),
    ]
    readonly_fields = ["page_link", "duration_shown", "params_shown", "pipeline_state_shown",
                       "snapshot_shown", "attempts_table"]
    inlines = [ExecutionInline]
    actions = ["cancel_runs", "pause_runs", "resume_runs", "rerun_runs_all", "rerun_runs_failed",
               "mark_baseline", "delete_runs"]

    def row_label(self, obj: Run) -> str:
        return f"Run {obj.pk}"  # str(run) reads the task snapshot, left out of the list

    def has_change_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        # The list's actions need the change permission; a run's own page is read-only, so
        # that a save can never write back a status read before a transition moved it.
        return obj is None and super().has_change_permission(request)

    @admin.display(description="Parameters")
    def params_shown(self, obj: Run) -> str:
        return json_block(obj.params)  # secrets are masked in params; the ciphertext is not shown

    @admin.display(description="Pipeline state")
    def pipeline_state_shown(self, obj: Run) -> str:
        return json_block(obj.pipeline_state) if obj.pipeline_state else "-"

    @admin.display(description="Task definition at launch")
    def snapshot_shown(self, obj: Run) -> str:
        return json_block(obj.task_snapshot)

    @admin.display(description="Duration")
    def duration_shown(self, obj: Run) -> str:
        duration = obj.duration
        if duration is None:
            return "-"
        seconds = int(duration.total_seconds())
        hours, rest = divmod(seconds, 3600)
        return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else \
            f"{rest // 60}:{rest % 60:02d}"

    @admin.display(description="Timeline")
    def page_link(self, obj: Run) -> str:
        return format_html(
            '<a href="{}">run page (timeline, logs, artifacts)</a> · '
            '<a href="{}?run__id__exact={}">events here</a> · '
            '<a href="{}?run__id__exact={}">executions here</a> · '
            '<a href="{}?object_type=run&amp;object_id={}">audit log</a>',
            obj.get_absolute_url(), reverse("admin:runs_event_changelist"), obj.pk,
            reverse("admin:runs_execution_changelist"), obj.pk,
            reverse("admin:runs_auditlog_changelist"), obj.pk)

    @admin.display(description="Attempts")
    def attempts_table(self, obj: Run) -> str:
        """Every attempt of every execution, in one query: the retry history at a glance."""
        attempts = list(Attempt.objects.filter(execution__run=obj)
                        .select_related("execution").only(
                            "number", "worker", "started_at", "finished_at", "exit_code",
                            "outcome", "error", "execution__id", "execution__name",
                            "execution__position")
                        .order_by("execution__position", "execution_id", "number")[:500])
        if not attempts:
            return "none yet"
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                                "<td>{}</td><td>{}</td><td>{}</td></tr>", (
            (format_html('<a href="{}">#{} {}</a>',
                         reverse("admin:runs_execution_change", args=[a.execution_id]),
                         a.execution_id, a.execution.name),
             a.number, a.worker or "-", _when(a.started_at), _when(a.finished_at),
             "-" if a.exit_code is None else a.exit_code, a.outcome or "-",
             Truncator(a.error).chars(160) if a.error else "")
            for a in attempts))
        return format_html(
            '<table class="sy-table"><thead><tr><th>Execution</th><th>Attempt</th>'
            "<th>Worker</th><th>Started</th><th>Finished</th><th>Exit</th><th>Outcome</th>"
            "<th>Error</th></tr></thead><tbody>{}</tbody></table>", rows)

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

    def get_deleted_objects(self, objs, request: HttpRequest) -> tuple:
        """The confirmation page lists a run's history as counts. Django would list every
        event and log chunk of it, one line each (thousands for a long run), and refuse
        because those admins are read-only; the history goes with its run (run_delete)."""
        from artifacts.models import Artifact

        runs = list(objs)
        ids = [run.pk for run in runs]
        parts = [
            ("execution", Execution.objects.filter(run_id__in=ids), "run_id"),
            ("attempt", Attempt.objects.filter(execution__run_id__in=ids), "execution__run_id"),
            ("event", Event.objects.filter(run_id__in=ids), "run_id"),
            ("log chunk", LogChunk.objects.filter(execution__run_id__in=ids),
             "execution__run_id"),
            ("artifact", Artifact.objects.filter(run_id__in=ids), "run_id"),
        ]
        per_run: dict[int, list[str]] = {pk: [] for pk in ids}
        totals: dict[str, int] = {"runs": len(runs)}
        for noun, qs, key in parts:
            counted = dict(qs.order_by().values_list(key).annotate(n=Count("id")))
            for pk, n in counted.items():
                per_run[pk].append(f"{n} {noun}{'' if n == 1 else 's'}")
            if counted:
                totals[f"{noun}s"] = sum(counted.values())
        deleted = []
        for run in runs:
            deleted += [format_html('Run: <a href="{}">{}</a>',
                                    reverse("admin:runs_run_change", args=[run.pk]), run),
                        per_run[run.pk]]
        return deleted, totals, set(), []

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


def _when(value) -> str:
    if value is None:
        return "-"
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S}"


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    readonly_fields = ["number", "worker", "started_at", "finished_at", "exit_code", "outcome",
                       "error"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Execution)
class ExecutionAdmin(BigListAdmin):
    # Status first: with the pipeline columns the row is wide, and status is what staff scan.
    list_display = ["id", "run_shown", "status", "stage", "iteration", "step", "name",
                    "attempt", "worker", "exit_code", "started_at"]
    list_filter = ["status", recent_values_filter("stage", "stage")]
    search_fields = ["=id", "=run__id", "name", "stage", "step", "worker", "=concurrency_key"]
    list_select_related = ["run__task"]
    list_defer = ("definition", "params", "input", "result", "run__task_snapshot",
                  "run__params", "run__secret_params", "run__pipeline_state")
    sortable_by = ["id", "status"]
    ordering = ["-id"]
    fieldsets = [
        (None, {"fields": ["run", "name", "status", "why_waiting", "attempt",
                           "worker", "heartbeat_at", "not_before", "exit_code", "outcome",
                           "error", "cancel_requested_at", "cancel_reason"]}),
        ("Concurrency", {"fields": ["concurrency_key", "concurrency_limit", "priority"]}),
        ("Pipeline", {"fields": ["stage_index", "stage", "iteration", "step", "matrix_shown",
                                 "position", "reused_from"]}),
        ("Definition, input and result", {"fields": ["definition_shown", "params_shown",
                                                     "input_shown", "result_shown"]}),
        ("Times", {"fields": ["created_at", "queued_at", "started_at", "finished_at",
                              "last_log_seq"]}),
    ]
    readonly_fields = ["why_waiting", "matrix_shown", "definition_shown", "params_shown",
                       "input_shown", "result_shown"]
    inlines = [AttemptInline]
    actions = ["cancel_executions", "approve_executions", "reject_executions"]

    @admin.display(description="Run")
    def run_shown(self, obj: Execution) -> str:
        return run_link(obj.run_id, f"#{obj.run_id} {obj.run.task.slug}")

    @admin.display(description="Why it waits")
    def why_waiting(self, obj: Execution) -> str:
        if obj.status not in (ExecutionStatus.PENDING, ExecutionStatus.QUEUED):
            return "-"
        from jobs.registry import workers_alive
        from jobs.selectors import slot_holders, why_waiting

        busy = Execution.objects.filter(status=ExecutionStatus.RUNNING).count()
        held_by = slot_holders(obj.concurrency_key) if obj.concurrency_key else None
        return why_waiting(obj, now=timezone.now(), alive=workers_alive().count(), busy=busy,
                           held_by=held_by)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Execution | None = None
                              ) -> bool:
        # Like a run's page: actions in the list, a read-only page for one execution.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Execution | None = None
                              ) -> bool:
        return False  # an execution goes with its run (run_delete), never on its own

    @admin.display(description="Matrix cell")
    def matrix_shown(self, obj: Execution) -> str:
        return json_block(obj.matrix) if obj.matrix else "-"

    @admin.display(description="Definition")
    def definition_shown(self, obj: Execution) -> str:
        return json_block(obj.definition) if obj.definition else "- (the run's task)"

    @admin.display(description="Parameters")
    def params_shown(self, obj: Execution) -> str:
        return json_block(obj.params) if obj.params else "-"

    @admin.display(description="Input")
    def input_shown(self, obj: Execution) -> str:
        return json_block(obj.input) if obj.input else "-"

    @admin.display(description="Result")
    def result_shown(self, obj: Execution) -> str:
        return json_block(obj.result) if obj.result is not None else "-"

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


# --- history: read-only for everyone ---------------------------------------------------------


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdmin, BigListAdmin):
    list_display = ["id", "execution", "number", "worker", "started_at", "finished_at",
                    "exit_code", "outcome"]
    list_filter = [recent_values_filter("outcome", "outcome")]
    list_select_related = ["execution"]
    list_defer = ("error", "execution__definition", "execution__params", "execution__input",
                  "execution__result", "execution__error")
    search_fields = ["=execution__id", "=execution__run__id", "worker"]
    sortable_by = ["id"]
    ordering = ["-id"]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin, BigListAdmin):
    # No date hierarchy: created_at has no index on this, the biggest table; staff come here
    # for one run's events (the run page links with ?run__id__exact=).
    list_display = ["id", "run_shown", "seq", "kind", "message_shown", "actor", "created_at"]
    fields = ["run", "seq", "kind", "message", "execution", "actor", "created_at", "data_shown"]
    readonly_fields = ["data_shown"]
    list_filter = [recent_values_filter("kind", "kind")]
    search_fields = ["=run__id", "=kind"]
    list_defer = ("data",)
    sortable_by = ["id"]
    ordering = ["-id"]

    @admin.display(description="Run", ordering="run_id")
    def run_shown(self, obj: Event) -> str:
        return run_link(obj.run_id)

    @admin.display(description="Data")
    def data_shown(self, obj: Event) -> str:
        return json_block(obj.data) if obj.data else "-"

    @admin.display(description="Message")
    def message_shown(self, obj: Event) -> str:
        return Truncator(obj.message).chars(200)


@admin.register(LogChunk)
class LogChunkAdmin(ReadOnlyAdmin, BigListAdmin):
    list_display = ["id", "execution", "seq", "attempt", "stream", "line_count", "created_at"]
    list_filter = ["stream"]
    search_fields = ["=execution__id", "=execution__run__id"]
    list_select_related = ["execution"]
    list_defer = ("text", "execution__definition", "execution__params", "execution__input",
                  "execution__result", "execution__error")
    sortable_by = ["id"]
    ordering = ["-id"]


class ViaFilter(admin.SimpleListFilter):
    title = "via"
    parameter_name = "via"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [("ui", "Web pages"), ("api", "API"), ("admin", "Admin")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditLog]) -> QuerySet:
        return queryset.filter(via=self.value()) if self.value() else queryset


# Where an audit row's object is edited, by its object_type (a model name).
_AUDITED_MODELS = {"run": "runs", "execution": "runs", "task": "runs", "project": "runs",
                   "membership": "runs", "apitoken": "runs", "webhookendpoint": "hooks",
                   "webhookdelivery": "hooks", "user": "auth"}


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin, BigListAdmin):
    list_display = ["created_at", "actor_label", "via", "action", "object_shown", "project",
                    "ip_address"]
    list_filter = [ViaFilter, recent_values_filter("action", "action"),
                   recent_values_filter("object_type", "object type"), "project"]
    search_fields = ["actor_label", "=action", "=object_id"]
    list_select_related = ["project"]
    list_defer = ("changes", "user_agent")
    date_hierarchy = "created_at"
    sortable_by = ["created_at"]
    fields = ["created_at", "actor", "actor_label", "via", "action", "project", "object_shown",
              "changes_shown", "ip_address", "user_agent"]
    readonly_fields = ["object_shown", "changes_shown"]

    @admin.display(description="Changes")
    def changes_shown(self, obj: AuditLog) -> str:
        return json_block(obj.changes) if obj.changes else "-"

    @admin.display(description="Object")
    def object_shown(self, obj: AuditLog) -> str:
        label = f"{obj.object_type} {obj.object_id}"
        app = _AUDITED_MODELS.get(obj.object_type)
        if app is None:
            return label
        try:
            url = reverse(f"admin:{app}_{obj.object_type}_change", args=[obj.object_id])
        except NoReverseMatch:
            return label
        # The object may have been deleted since; the admin says so on the page it opens.
        return format_html('<a href="{}">{}</a>', url, label)


from runs import admin_schedules  # noqa: E402, F401  registers ScheduleAdmin
