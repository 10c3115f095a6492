"""REST endpoints for schedules: list a project's, create one on a task, read, change, delete.
Viewers read; maintainers write (a schedule launches runs as its creator)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Path, Query, Router, Schema, Status

from runs import selectors
from runs.api import actor_for
from runs.models import Role, Schedule
from runs.schedules import schedule_create, schedule_delete, schedule_update
from runs.schemas import ErrorOut, StorableText

router = Router(tags=["schedules"])

READ = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut}
WRITE = {**READ, 403: ErrorOut, 409: ErrorOut, 422: ErrorOut}
ID = Path(..., ge=1)


class ScheduleIn(Schema):
    name: StorableText = Field(max_length=100)
    cron: StorableText = Field(max_length=100, description="Five fields, e.g. `0 3 * * 1-5`.")
    timezone: StorableText = Field("UTC", max_length=64,
                                   description="IANA time zone the cron expression is read in.")
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class SchedulePatch(Schema):
    name: StorableText | None = Field(None, max_length=100)
    cron: StorableText | None = Field(None, max_length=100)
    timezone: StorableText | None = Field(None, max_length=64)
    params: dict[str, Any] | None = None
    enabled: bool | None = None


class ScheduleOut(Schema):
    id: int
    project: str
    task: str
    name: str
    cron: str
    timezone: str
    params: dict[str, Any]
    enabled: bool
    next_run_at: datetime | None
    last_slot_at: datetime | None
    last_run: int | None
    skipped_slots: int
    last_note: str
    created_by: str | None
    created_at: datetime


class SchedulePage(Schema):
    items: list[ScheduleOut]
    next_cursor: str | None = None


def schedule_out(schedule: Schedule) -> dict:
    return {
        "id": schedule.pk, "project": schedule.task.project.slug, "task": schedule.task.slug,
        "name": schedule.name, "cron": schedule.cron, "timezone": schedule.timezone,
        "params": schedule.params, "enabled": schedule.enabled,
        "next_run_at": schedule.next_run_at if schedule.enabled else None,
        "last_slot_at": schedule.last_slot_at, "last_run": schedule.last_run_id,
        "skipped_slots": schedule.skipped_slots, "last_note": schedule.last_note,
        "created_by": schedule.created_by.get_username() if schedule.created_by else None,
        "created_at": schedule.created_at,
    }


def _schedule_get(request: HttpRequest, schedule_id: int, minimum: str) -> Schedule:
    schedule = (Schedule.objects.select_related("task", "task__project", "created_by")
                .filter(pk=schedule_id).first())
    return selectors.visible_or_404(request.user, schedule, lambda s: s.task.project, minimum,
                                    f"Schedule {schedule_id}")


@router.get("/projects/{project}/schedules", response={200: SchedulePage, **READ},
            operation_id="schedules_list")
def schedules_list(request: HttpRequest, project: str, cursor: str | None = None,
                   limit: int = Query(100, ge=1, le=200)):
    found = selectors.project_get(request.user, project)
    qs = Schedule.objects.filter(task__project=found).select_related(
        "task", "task__project", "created_by")
    rows, next_cursor = selectors.keyset_page(qs, cursor=cursor, limit=limit)
    return {"items": [schedule_out(s) for s in rows], "next_cursor": next_cursor}


@router.post("/projects/{project}/tasks/{task}/schedules", response={201: ScheduleOut, **WRITE},
             operation_id="schedules_create")
def schedules_create(request: HttpRequest, project: str, task: str, body: ScheduleIn):
    found = selectors.task_get(request.user, project, task, minimum=Role.MAINTAINER)
    schedule = schedule_create(task=found, data=body.dict(), actor=actor_for(request))
    return Status(201, schedule_out(schedule))


@router.get("/schedules/{int:schedule_id}", response={200: ScheduleOut, **READ},
            operation_id="schedules_get")
def schedules_get(request: HttpRequest, schedule_id: int = ID):
    return schedule_out(_schedule_get(request, schedule_id, Role.VIEWER))


@router.patch("/schedules/{int:schedule_id}", response={200: ScheduleOut, **WRITE},
              operation_id="schedules_update")
def schedules_update(request: HttpRequest, body: SchedulePatch, schedule_id: int = ID):
    schedule = _schedule_get(request, schedule_id, Role.MAINTAINER)
    data = body.dict(exclude_unset=True)
    schedule = schedule_update(schedule=schedule, data=data, actor=actor_for(request))
    return schedule_out(schedule)


@router.delete("/schedules/{int:schedule_id}", response={204: None, **WRITE},
               operation_id="schedules_delete")
def schedules_delete(request: HttpRequest, schedule_id: int = ID):
    schedule = _schedule_get(request, schedule_id, Role.MAINTAINER)
    schedule_delete(schedule=schedule, actor=actor_for(request))
    return Status(204, None)

