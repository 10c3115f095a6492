"""Back office for what projects are configured with: projects, memberships, tasks and API
tokens. Changes go through `runs.project_services` and `runs.services` where those exist
(memberships, task enable/disable and deletion, token revocation), so they are checked and
audited exactly as from the pages and the API; project and task edits made in the forms are
audited here, in the admin's own transaction, under the same action names the services use.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from runs.admin_actions import ServiceRefusalsAdmin, admin_actor, apply_to_each
from runs.errors import Conflict
from runs.models import ApiToken, Membership, Project, Role, Task
from runs.project_services import member_add, member_remove, member_update, task_delete, task_update
from runs.services import api_token_revoke
from runs.transitions import Actor, audit_write


def _changes(form: forms.ModelForm) -> dict[str, Any]:
    """The changed fields of a saved form as an audit row keeps them: related objects by id,
    definitions (spec, parameter schema) by name only, like runs.project_services."""
    changes: dict[str, Any] = {}
    for name in form.changed_data:
        value = form.cleaned_data.get(name)
        if name in ("spec", "params_schema"):
            value = "(changed)"
        elif isinstance(value, models.Model):
            value = value.pk
        changes[name] = value
    return changes


# --- JSON fields -------------------------------------------------------------------------------


class JSONTextField(forms.JSONField):
    """A JSON form field for the task definition: shown indented, and a parse error says where
    the JSON breaks. `allow_null=False` (columns that are NOT NULL): an empty box or `null` is a
    form error too, not an IntegrityError on save."""

    def __init__(self, *, allow_null: bool = True, example: str = "{}", indent: int | None = 2,
                 **kwargs: Any) -> None:
        self.allow_null = allow_null
        self.example = example
        self.indent = indent
        kwargs.setdefault("widget", forms.Textarea(attrs={"class": "sy-json", "rows": 12,
                                                          "spellcheck": "false"}))
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        try:
            converted = super().to_python(value)
        except ValidationError:
            try:
                json.loads(value, cls=self.decoder)
            except json.JSONDecodeError as exc:
                raise ValidationError(
                    f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
                    code="invalid") from None
            raise
        if converted is None and not self.allow_null:
            raise ValidationError(f"Enter JSON here, at least {self.example}.", code="required")
        return converted

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=self.indent, ensure_ascii=False, cls=self.encoder)


class ModelErrorsOnFormFields(forms.ModelForm):
    """Model validation (Task.clean) may name a field the form does not edit (the read-only
    baseline run): such errors are shown at the top of the form instead of raising."""

    def _update_errors(self, errors: ValidationError) -> None:
        if hasattr(errors, "error_dict"):
            placed: dict[str, list] = {}
            for name, messages_ in errors.error_dict.items():
                key = name if name in self.fields or name == NON_FIELD_ERRORS else NON_FIELD_ERRORS
                placed.setdefault(key, []).extend(messages_)
            errors = ValidationError(placed)
        super()._update_errors(errors)


# --- projects and members --------------------------------------------------------------------


class MembershipInline(admin.TabularInline):
    """Members are shown here and changed on their own page, through the member services (one
    maintainer at least, audited)."""

    model = Membership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = fields
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return super().get_queryset(request).select_related("user")


@admin.register(Project)
class ProjectAdmin(ServiceRefusalsAdmin):
    list_display = ["slug", "name", "retention_days", "retention_runs", "created_at", "links"]
    search_fields = ["slug", "name"]
    date_hierarchy = "created_at"
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["links"]
    inlines = [MembershipInline]

    @admin.display(description="Go to")
    def links(self, obj: Project) -> str:
        if obj.pk is None:
            return "-"
        return format_html(
            '<a href="{}">page</a> · <a href="{}?project__id__exact={}">tasks</a> · '
            '<a href="{}?project__id__exact={}">runs</a> · '
            '<a href="{}?project={}">add a member</a>',
            obj.get_absolute_url(), reverse("admin:runs_task_changelist"), obj.pk,
            reverse("admin:runs_run_changelist"), obj.pk,
            reverse("admin:runs_membership_add"), obj.pk)

    def save_model(self, request: HttpRequest, obj: Project, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        audit_write(actor=admin_actor(request), action="project.update" if change else
                    "project.create", obj=obj, now=timezone.now(), project_id=obj.pk,
                    changes=_changes(form))

    def has_delete_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        # A project's runs are its history: they leave by retention (manage.py prune), not by
        # a cascade from a delete button that would list every row on its confirmation page.
        if obj is not None and obj.runs.exists():
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs, request: HttpRequest) -> tuple:
        from hooks.models import WebhookDelivery

        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        # Deliveries outlive pruned runs; read-only on their own, they go with their endpoint.
        perms_needed.discard(WebhookDelivery._meta.verbose_name)
        return deleted, counts, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: Project) -> None:
        audit_write(actor=admin_actor(request), action="project.delete", obj=obj,
                    now=timezone.now(), changes={"slug": obj.slug})
        super().delete_model(request, obj)

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, on its own page
        return actions


class MembershipForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ["project", "user", "role"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        # The rule member_update enforces, as a field error before anything is saved.
        if self.instance.pk and data.get("role") and data["role"] != Role.MAINTAINER:
            stored = Membership.objects.get(pk=self.instance.pk)
            others = Membership.objects.filter(project_id=stored.project_id,
                                               role=Role.MAINTAINER).exclude(pk=stored.pk)
            if stored.role == Role.MAINTAINER and not others.exists():
                self.add_error("role", "A project needs at least one maintainer; make someone "
                               "else maintainer first.")
        return data


@admin.register(Membership)
class MembershipAdmin(ServiceRefusalsAdmin):
    form = MembershipForm
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__slug"]
    list_select_related = ["user", "project"]
    autocomplete_fields = ["user", "project"]
    date_hierarchy = "created_at"
    actions = ["remove_members"]

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None
                            ) -> list[str]:
        # Whose membership in which project is fixed; a different pair is a new membership.
        return ["project", "user", "created_at"] if obj is not None else []

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs: Any):
        if db_field.name == "user":
            from django.contrib.auth import get_user_model

            # member_add accepts active users only; say so on the field.
            kwargs["queryset"] = get_user_model().objects.filter(is_active=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Membership, form, change: bool) -> None:
        actor = admin_actor(request)
        if change:
            member_update(project=obj.project, username=obj.user.get_username(), role=obj.role,
                          actor=actor)
            return
        made = member_add(project=obj.project, username=obj.user.get_username(), role=obj.role,
                          actor=actor)
        obj.pk, obj.created_at = made.pk, made.created_at

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        member_remove(project=obj.project, username=obj.user.get_username(),
                      actor=admin_actor(request))

    def get_actions(self, request: HttpRequest) -> dict:
        # Ours removes the others when one is the project's last maintainer, and says so.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Remove selected members from their projects",
                  permissions=["delete"])
    def remove_members(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        rows = queryset.select_related("user", "project").order_by("pk")
        targets = [(m.pk, f"Membership of {m.user.get_username()} in {m.project.slug}")
                   for m in rows]

        def move(pk: int, actor: Actor) -> str:
            membership = Membership.objects.select_related("user", "project").get(pk=pk)
            member_remove(project=membership.project, username=membership.user.get_username(),
                          actor=actor)
            return "done"

        apply_to_each(self, request, targets, move, verb="Removed", noun="member",
                      refused_text="not removed")


# --- tasks ---------------------------------------------------------------------------------------


class TaskForm(ModelErrorsOnFormFields):
    class Meta:
        model = Task
        # The admin narrows these to the fieldsets minus the read-only fields.
        fields = ["project", "slug", "name", "description", "kind", "enabled", "spec",
                  "params_schema", "timeout_seconds", "max_attempts", "retry_backoff",
                  "retry_on", "concurrency_key", "concurrency_limit", "priority", "max_parallel",
                  "run_deadline_seconds", "artifact_globs", "diff_minor_ratio",
                  "diff_major_ratio", "diff_pixel_tolerance"]


@admin.register(Task)
class TaskAdmin(ServiceRefusalsAdmin):
    form = TaskForm
    list_display = ["slug", "name", "project", "kind", "enabled", "priority", "concurrency_key",
                    "timeout_seconds", "updated_at", "launch_link"]
    list_filter = ["kind", "enabled", "project"]
    search_fields = ["slug", "name", "project__slug"]
    list_select_related = ["project"]
    autocomplete_fields = ["project"]
    date_hierarchy = "updated_at"
    # The Launch button of the change page goes where "View on site" would.
    view_on_site = False
    sortable_by = ["slug", "name", "project", "kind", "enabled", "priority", "updated_at"]
    actions = ["enable_tasks", "disable_tasks", "clear_baselines"]
    fieldsets = [
        (None, {"fields": ["project", "slug", "name", "description", "kind", "enabled",
                           "launch_link"]}),
        ("Definition", {
            "fields": ["spec", "params_schema"],
            "description": "JSON. A command task's spec is {\"argv\": [...], \"env\": {...}}; "
                           "the parameter schema is a list of {\"name\", \"type\", ...}. "
                           "Errors name the path that is wrong (spec.argv[2]).",
        }),
        ("Execution", {"fields": ["timeout_seconds", "max_attempts", "retry_backoff", "retry_on",
                                  "concurrency_key", "concurrency_limit", "priority",
                                  "max_parallel", "run_deadline_seconds"]}),
        ("Artifacts and image comparison", {
            "fields": ["artifact_globs", "baseline_run", "diff_minor_ratio", "diff_major_ratio",
                       "diff_pixel_tolerance"],
            "description": "The baseline is set from the run list (action “Mark as the "
                           "baseline of its task”) and cleared with this list's action.",
        }),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]

    # Which JSON columns may hold null, and the smallest valid value to suggest otherwise.
    json_examples = {"spec": "{}", "params_schema": "[]", "retry_backoff": "[]",
                     "retry_on": "[]", "artifact_globs": "[]"}

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs: Any):
        if isinstance(db_field, models.JSONField):
            kwargs["form_class"] = JSONTextField
            kwargs["allow_null"] = db_field.null
            kwargs["example"] = self.json_examples.get(db_field.name, "{}")
            if db_field.name in ("spec", "params_schema"):
                kwargs["widget"] = forms.Textarea(attrs={"class": "sy-json", "rows": 20,
                                                         "spellcheck": "false"})
            else:  # short lists, on one line: [60, 300, 900]
                kwargs["indent"] = None
                kwargs["widget"] = forms.Textarea(attrs={"class": "sy-json", "rows": 2,
                                                         "spellcheck": "false"})
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Task | None = None) -> list[str]:
        fixed = ["baseline_run", "created_at", "updated_at", "launch_link"]
        # Runs keep their project: a task with runs does not move to another one.
        return fixed + ["project"] if obj is not None else fixed

    @admin.display(description="Launch")
    def launch_link(self, obj: Task) -> str:
        if obj.pk is None:
            return "-"
        if not obj.enabled:
            return "disabled"
        # The end-user launch page: the form generated from the parameter schema, validated
        # by runs.services.run_launch; staff are maintainers of every project.
        return format_html('<a href="{}">launch</a>', obj.get_absolute_url())

    def save_model(self, request: HttpRequest, obj: Task, form, change: bool) -> None:
        # Validated by the form (Task.clean, the same rules as task_create/task_update); the
        # audit row is written in the admin's transaction, under the services' action names.
        super().save_model(request, obj, form, change)
        audit_write(actor=admin_actor(request), action="task.update" if change else
                    "task.create", obj=obj, now=timezone.now(), project_id=obj.project_id,
                    changes={"slug": obj.slug, **_changes(form)} if not change else
                    _changes(form))

    def has_delete_permission(self, request: HttpRequest, obj: Task | None = None) -> bool:
        # Runs keep their task (task_delete refuses): no delete button that could only fail.
        if obj is not None and obj.runs.exists():
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Task) -> None:
        task_delete(task=obj, actor=admin_actor(request))

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, through task_delete
        return actions

    def _targets(self, queryset: QuerySet[Task]) -> list[tuple[int, str]]:
        # Labels start with a word: the admin capitalises the first letter of each message.
        return [(pk, f"Task {project}/{slug}") for pk, project, slug in
                queryset.order_by("pk").values_list("pk", "project__slug", "slug")]

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Task], enabled: bool
                     ) -> None:
        def move(pk: int, actor: Actor) -> str:
            task = Task.objects.select_related("project").get(pk=pk)
            if task.enabled == enabled:
                raise Conflict(f"it is already {'enabled' if enabled else 'disabled'}.")
            task_update(task=task, data={"enabled": enabled}, actor=actor)
            return "done"

        apply_to_each(self, request, self._targets(queryset), move,
                      verb="Enabled" if enabled else "Disabled", noun="task",
                      refused_text="not changed")

    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected tasks (no new launches)", permissions=["change"])
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._set_enabled(request, queryset, False)

    @admin.action(description="Clear the baseline of selected tasks", permissions=["change"])
    def clear_baselines(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        from artifacts.services import baseline_clear

        def move(pk: int, actor: Actor) -> str:
            task = Task.objects.get(pk=pk)
            if task.baseline_run_id is None:
                raise Conflict("it has no baseline.")
            baseline_clear(task, actor=actor)
            return "done"

        apply_to_each(self, request, self._targets(queryset), move,
                      verb="Cleared the baseline of", noun="task", refused_text="not changed")


# --- API tokens ----------------------------------------------------------------------------------



class TokenStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> QuerySet:
        now = timezone.now()
        unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        if self.value() == "active":
            return queryset.filter(unexpired, revoked_at__isnull=True)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Read-only, with a Revoke action through runs.services.api_token_revoke (the API's).

    The hash is useless to show and the secret is never stored: tokens are made by
    `manage.py create_api_token`, the API or the account page, which show the token once.
    Tokens are not deleted here: a revoked token stays listed as the record of its use.
    """

    list_display = ["name", "prefix", "user", "state", "created_at", "expires_at",
                    "last_used_at", "revoked_at"]
    list_filter = [TokenStateFilter]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    date_hierarchy = "created_at"
    fields = ["name", "prefix", "user", "state", "created_at", "expires_at", "last_used_at",
              "revoked_at"]
    readonly_fields = fields
    actions = ["revoke_tokens"]

    @admin.display(description="State")
    def state(self, obj: ApiToken) -> str:
        if obj.revoked_at:
            return "revoked"
        if obj.expires_at and obj.expires_at <= timezone.now():
            return "expired"
        return "active"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        targets = [(pk, f"Token {prefix}… ({name})") for pk, prefix, name in
                   queryset.order_by("pk").values_list("pk", "prefix", "name")]

        def move(pk: int, actor: Actor) -> str:
            token = ApiToken.objects.get(pk=pk)
            if token.revoked_at is not None:
                raise Conflict(f"it was already revoked on {token.revoked_at:%Y-%m-%d %H:%M} "
                               "UTC.")
            api_token_revoke(token=token, actor=actor)
            return "done"

        apply_to_each(self, request, targets, move, verb="Revoked", noun="token",
                      refused_text="not revoked")
