"""The schedules page of a project: every schedule with its next run (in the viewer's time),
last run, skipped slots and notes; maintainers add, enable, disable and delete schedules here.
Plain forms (POST then 303) that work without JavaScript; writes go through runs.schedules."""

from __future__ import annotations

import json
from zoneinfo import available_timezones

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from runs import selectors
from runs.control_views import control
from runs.errors import InvalidInput
from runs.models import Role, Schedule
from runs.schedules import schedule_create, schedule_delete, schedule_update
from runs.views import actor_for, after_post, page

COMMON_ZONES = ["UTC", "Europe/London", "Europe/Berlin", "Europe/Paris", "America/New_York",
                "America/Chicago", "America/Los_Angeles", "Asia/Tokyo", "Asia/Kolkata",
                "Australia/Sydney"]


def _page(request: HttpRequest, project, *, form: dict | None = None,
          errors: dict | None = None, status: int = 200) -> HttpResponse:
    role = selectors.role_of(request.user, project)
    by_field: dict[str, list[str]] = {}
    for field, problems in (errors or {}).items():
        root = field.split(".")[0]
        target = root if root in ("task", "name", "cron", "timezone", "params") else "params"
        label = f"parameter {field.split('.', 1)[1]!r}" if field.startswith("params.") else field
        by_field.setdefault(target, []).extend(
            problems if field == target else [f"{label}: {p}" for p in problems])
    schedules = list(Schedule.objects.filter(task__project=project)
                     .select_related("task", "last_run", "created_by")
                     .order_by("task__name", "name"))
    tasks = list(selectors.tasks_for_project(project).exclude(enabled=False))
    return render(request, "runs/schedules.html", {
        "project": project,
        "schedules": schedules,
        "tasks": tasks,
        "can_manage": role == Role.MAINTAINER,
        "role": Role(role).label if role else "",
        "tab": "schedules",
        "form": form or {"timezone": "UTC", "params": "{}"},
        "errors": by_field,
        "zones": COMMON_ZONES,
        "nav": "projects",
    }, status=status)


@require_http_methods(["GET", "POST"])
@page
def project_schedules(request: HttpRequest, slug: str) -> HttpResponseBase:
    project = selectors.project_get(request.user, slug)
    if request.method == "GET":
        return _page(request, project)
    selectors.require_role(request.user, project, Role.MAINTAINER)
    form = {k: request.POST.get(k, "").strip() for k in
            ("task", "name", "cron", "timezone", "params")}
    form["enabled"] = request.POST.get("enabled") == "on"
    errors: dict[str, list[str]] = {}
    task = selectors.tasks_for_project(project).filter(slug=form["task"]).first()
    if task is None:
        errors["task"] = ["choose a task of this project"]
    try:
        params = json.loads(form["params"] or "{}")
    except ValueError as exc:
        errors["params"] = [f"must be a JSON object such as {{\"name\": \"value\"}} ({exc})"]
        params = None
    except RecursionError:
        errors["params"] = ["is nested too deeply; give a flat JSON object of parameters"]
        params = None
    if form["timezone"] and form["timezone"] not in available_timezones() \
            and form["timezone"] != "UTC":
        errors["timezone"] = [f"{form['timezone']!r} is not an IANA time zone such as "
                              "Europe/Berlin"]
    if not errors:
        try:
            schedule = schedule_create(task=task, data={
                "name": form["name"], "cron": form["cron"], "timezone": form["timezone"] or "UTC",
                "params": params, "enabled": form["enabled"]}, actor=actor_for(request))
        except InvalidInput as exc:
            errors = exc.fields
        else:
            messages.success(request, f"Schedule {schedule.name!r} added; it first runs at "
                             f"{schedule.next_run_at:%Y-%m-%d %H:%M} UTC.")
            return after_post(request, reverse("project_schedules", args=[project.slug]))
    return _page(request, project, form=form, errors=errors, status=422)


def _schedule(request: HttpRequest, schedule_id: int) -> Schedule:
    schedule = (Schedule.objects.select_related("task", "task__project")
                .filter(pk=schedule_id).first())
    return selectors.visible_or_404(request.user, schedule, lambda s: s.task.project,
                                    Role.MAINTAINER, "Schedule")


@control
def schedule_toggle(request: HttpRequest, schedule_id: int) -> HttpResponseBase:
    schedule = _schedule(request, schedule_id)
    on = not schedule.enabled
    schedule_update(schedule=schedule, data={"enabled": on}, actor=actor_for(request))
    messages.success(request, f"Schedule {schedule.name!r} {'enabled' if on else 'disabled'}.")
    return after_post(request, reverse("project_schedules", args=[schedule.task.project.slug]))


@control
def schedule_remove(request: HttpRequest, schedule_id: int) -> HttpResponseBase:
    schedule = _schedule(request, schedule_id)
    slug = schedule.task.project.slug
    schedule_delete(schedule=schedule, actor=actor_for(request))
    messages.success(request, f"Schedule {schedule.name!r} deleted.")
    return after_post(request, reverse("project_schedules", args=[slug]))
