"""Schedules in the admin: created and changed through runs.schedules (validation per field,
next slot computed, audited as the staff user), enabled and disabled in bulk."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from runs.errors import InvalidInput
from runs.models import Schedule
from runs.schedules import schedule_create, schedule_update, schedule_validate


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = ["task", "name", "cron", "timezone", "params", "enabled"]

    def clean(self) -> dict:
        data = super().clean()
        task = data.get("task")
        if task is None or self.errors:
            return data
        try:
            cleaned = schedule_validate(task, {k: data.get(k) for k in
                                               ("name", "cron", "timezone", "params")})
        except InvalidInput as exc:
            for field, messages in exc.fields.items():
                target = field.split(".")[0] if field.split(".")[0] in self.fields else None
                for message in messages:
                    self.add_error(target, f"{field}: {message}" if target != field else message)
            return data
        data["params"] = cleaned["params"]
        return data


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = ["name", "task", "cron", "timezone", "enabled", "next_run_at", "last_run",
                    "skipped_slots", "last_note"]
    list_filter = ["enabled", "task__project"]
    search_fields = ["name", "task__slug", "cron"]
    list_select_related = ["task", "task__project", "last_run"]
    autocomplete_fields = ["task"]
    readonly_fields = ["next_run_at", "last_slot_at", "last_run", "skipped_slots", "last_note",
                       "created_by", "created_at", "updated_at"]
    actions = ["enable", "disable"]

    def save_model(self, request: HttpRequest, obj: Schedule, form, change: bool) -> None:
        from runs.admin_actions import admin_actor

        data = {k: form.cleaned_data[k] for k in ("name", "cron", "timezone", "params",
                                                  "enabled")}
        if change:
            saved = schedule_update(schedule=Schedule.objects.get(pk=obj.pk), data=data,
                                    actor=admin_actor(request))
        else:
            saved = schedule_create(task=form.cleaned_data["task"], data=data,
                                    actor=admin_actor(request))
        obj.pk = saved.pk
        obj.next_run_at = saved.next_run_at

    def _toggle(self, request: HttpRequest, queryset: QuerySet[Schedule], on: bool) -> None:
        from runs.admin_actions import admin_actor

        for schedule in queryset.select_related("task"):
            schedule_update(schedule=schedule, data={"enabled": on}, actor=admin_actor(request))
        self.message_user(request, f"{'Enabled' if on else 'Disabled'} {queryset.count()} "
                          f"schedule(s).")

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._toggle(request, queryset, True)

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._toggle(request, queryset, False)
