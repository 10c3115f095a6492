"""Schedules: validation, create/update/delete (audited), and firing due slots.

Firing runs inside the reaper pass (jobs.reaper), which some worker runs every
SWITCHYARD_REAP_SECONDS, so a slot fires within about that long of its time. Guarantees:

- once per slot: the launched run's idempotency key is `schedule:<id>:<slot>` and keys are
  unique per project, so two machines firing the same slot get the same run; the schedule row
  is also locked (skipping rows another machine holds) while it is advanced;
- no replay: if the latest due slot is older than SWITCHYARD_SCHEDULE_GRACE_SECONDS (every
  worker was down), it is skipped too. Skipped slots are counted on the schedule and the note
  says which, so an operator sees that a 03:00 backup did not happen;
- a slot whose launch is refused (the task was disabled, its parameters no longer validate) is
  noted on the schedule and the schedule moves on.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs.errors import ApplicationError, InvalidInput, NotFound
from runs.models import Role, Schedule, Task, Trigger
from runs.params import params_validate, secret_names
from runs.transitions import Actor, audit_write

logger = logging.getLogger(__name__)

MAX_COUNTED = 10_000  # missed slots counted one by one up to this many
FIELDS = ("name", "cron", "timezone", "params", "enabled")


# Plain cron only: numbers, ranges, steps, lists, and month/day names. croniter also accepts
# random ("R"), "L", "W", "#" and "?" forms, which would make every evaluation differ.
_FIELD = re.compile(r"^(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?(,(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?)*$")
_NAMED = re.compile(r"^[A-Za-z0-9*,/-]+$")
_NAMES = re.compile(r"[A-Za-z]+")
MONTHS = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
DAYS = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"}


def cron_error(expression: str) -> str | None:
    """Why the expression is not a five-field cron expression we accept, or None."""
    if not isinstance(expression, str) or len(expression.split()) != 5:
        return ("must have five fields: minute hour day-of-month month day-of-week, "
                "e.g. '0 3 * * 1-5'")
    if len(expression) > 100:
        return "must be at most 100 characters"
    fields = expression.split()
    for index, field in enumerate(fields):
        names = MONTHS if index == 3 else DAYS if index == 4 else set()
        if names and _NAMED.match(field):
            words = {w.lower() for w in _NAMES.findall(field)}
            if words <= names and _FIELD.match(_NAMES.sub("0", field)):
                continue
        if not _FIELD.match(field):
            return (f"field {index + 1} ({field!r}) is not plain cron: use numbers, '*', "
                    "ranges (1-5), steps (*/15) and lists (1,3,5)")
    try:
        # Building it checks the ranges; one step checks that the expression ever fires
        # (31 February never comes).
        croniter(expression, timezone.now()).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as exc:
        return f"is not a valid cron expression ({exc})"
    return None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("Invalid schedule.", fields={
            "timezone": [f"{name!r} is not an IANA time zone such as Europe/Berlin or UTC"]},
        ) from None


def _hour_fixed(schedule: Schedule) -> bool:
    return not schedule.cron.split()[1].startswith("*")


def _repeated_wall_time(slot: datetime, zone: ZoneInfo) -> bool:
    """Is this slot the second occurrence of a local time (the hour repeated when clocks go
    back)? Then a daily 01:30 would fire twice, an hour apart."""
    local = slot.astimezone(zone).replace(tzinfo=None)
    return (slot - timedelta(hours=1)).astimezone(zone).replace(tzinfo=None) == local


def _slots(schedule: Schedule, after: datetime):
    """Slots strictly after `after`, as aware UTC datetimes. Like cron, a schedule with fixed
    hours fires once when clocks go back; one with every hour fires in both hours."""
    zone = ZoneInfo(schedule.timezone)
    itr = croniter(schedule.cron, after.astimezone(zone))
    fixed = _hour_fixed(schedule)
    while True:
        slot = itr.get_next(datetime).astimezone(ZoneInfo("UTC"))
        if fixed and _repeated_wall_time(slot, zone):
            continue
        yield slot


def next_slot(schedule: Schedule, after: datetime) -> datetime:
    """The first slot strictly after `after`, as an aware UTC datetime."""
    return next(_slots(schedule, after))


def schedule_validate(task: Task, data: dict[str, Any]) -> dict[str, Any]:
    """The data with its parameters cleaned, or InvalidInput naming each bad field."""
    errors: dict[str, list[str]] = {}
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        errors["name"] = ["must be 1 to 100 characters"]
    problem = cron_error(data.get("cron"))
    if problem:
        errors["cron"] = [problem]
    try:
        _zone(data.get("timezone") or "UTC")
    except InvalidInput as exc:
        errors.update(exc.fields)
    params = data.get("params") or {}
    if not isinstance(params, dict):
        errors["params"] = ["must map parameter names to values"]
    else:
        secret = secret_names(task.params_schema) & set(params)
        if secret:
            errors["params"] = [f"a schedule cannot hold secret values ({', '.join(sorted(secret))})"
                                "; give the parameter a default or pass it another way"]
        else:
            clean, param_errors = params_validate(task.params_schema, params)
            if param_errors:
                errors.update({f"params.{k}": v for k, v in param_errors.items()})
            else:
                data["params"] = clean
    if errors:
        raise InvalidInput("The schedule is invalid; see the errors per field.", fields=errors)
    return data


def schedule_create(*, task: Task, data: dict[str, Any], actor: Actor,
                    now: datetime | None = None) -> Schedule:
    now = now or timezone.now()
    data = schedule_validate(task, {"timezone": "UTC", "params": {}, "enabled": True, **data})
    if Schedule.objects.filter(task=task, name=data["name"]).exists():
        raise InvalidInput("The schedule is invalid.", fields={
            "name": [f"task {task.slug!r} already has a schedule named {data['name']!r}"]})
    schedule = Schedule(task=task, created_by=actor.user if getattr(actor.user, "pk", None)
                        else None, **{k: data[k] for k in FIELDS})
    schedule.next_run_at = next_slot(schedule, now)
    with transaction.atomic():
        schedule.save()
        audit_write(actor=actor, action="schedule.create", obj=schedule, now=now,
                    project_id=task.project_id,
                    changes={k: data[k] for k in FIELDS})
    return schedule


def schedule_update(*, schedule: Schedule, data: dict[str, Any], actor: Actor,
                    now: datetime | None = None) -> Schedule:
    now = now or timezone.now()
    merged = {k: getattr(schedule, k) for k in FIELDS}
    merged.update({k: v for k, v in data.items() if k in FIELDS and v is not None})
    merged = schedule_validate(schedule.task, merged)
    if merged["name"] != schedule.name and Schedule.objects.filter(
            task=schedule.task, name=merged["name"]).exclude(pk=schedule.pk).exists():
        raise InvalidInput("The schedule is invalid.", fields={
            "name": [f"another schedule of this task is named {merged['name']!r}"]})
    changes = {k: [getattr(schedule, k), merged[k]] for k in FIELDS
               if getattr(schedule, k) != merged[k]}
    for key in FIELDS:
        setattr(schedule, key, merged[key])
    editor = actor.user if getattr(actor.user, "pk", None) else None
    if editor is not None and editor.pk != schedule.created_by_id:
        # Whoever changes a schedule answers for the runs it launches from now on.
        changes["owner"] = [schedule.created_by.get_username() if schedule.created_by
                            else None, editor.get_username()]
        schedule.created_by = editor
    if {"cron", "timezone", "enabled"} & set(changes):
        # From now on: enabling a schedule never fires the slots it spent disabled.
        schedule.next_run_at = next_slot(schedule, now)
    with transaction.atomic():
        schedule.save()
        audit_write(actor=actor, action="schedule.update", obj=schedule, now=now,
                    project_id=schedule.task.project_id, changes=changes)
    return schedule


def schedule_delete(*, schedule: Schedule, actor: Actor, now: datetime | None = None) -> None:
    now = now or timezone.now()
    with transaction.atomic():
        audit_write(actor=actor, action="schedule.delete", obj=schedule, now=now,
                    project_id=schedule.task.project_id,
                    changes={"name": schedule.name, "cron": schedule.cron})
        schedule.delete()


def _owner_problem(schedule: Schedule) -> str:
    """Why the schedule's owner may no longer launch its task ('' when they may). A schedule
    launches as the person who last set it up; losing the project, or the account, stops it
    from launching in their name until a maintainer edits it (and so takes it over)."""
    from runs.selectors import has_role

    owner = schedule.created_by
    if owner is None:
        return ""  # made by the system or an owner since deleted: launches as Switchyard
    if not owner.is_active:
        return (f"its owner {owner.get_username()!r} is deactivated; a maintainer must edit "
                "the schedule to take it over")
    if not has_role(owner, schedule.task.project, Role.OPERATOR):
        return (f"its owner {owner.get_username()!r} may no longer launch runs in this "
                "project; a maintainer must edit the schedule to take it over")
    return ""


@dataclass
class FireReport:
    fired: int = 0
    skipped: int = 0
    refused: int = 0


def _slots_between(schedule: Schedule, start: datetime, end: datetime) -> tuple[list, int]:
    """Slots from `start` (inclusive) to `end` (inclusive): the last one, and how many."""
    count, last = 0, None
    for slot in _slots(schedule, start - timedelta(seconds=1)):
        if slot > end or count >= MAX_COUNTED:
            break
        count, last = count + 1, slot
    if count >= MAX_COUNTED:  # down for very long: the latest slot, found directly
        zone = ZoneInfo(schedule.timezone)
        last = croniter(schedule.cron, (end + timedelta(seconds=1)).astimezone(zone)).get_prev(
            datetime).astimezone(ZoneInfo("UTC"))
    return [last] if last else [], count


def schedules_fire(*, now: datetime | None = None) -> FireReport:
    """Launch every due slot once (see the module docstring)."""
    from runs.services import run_launch

    now = now or timezone.now()
    report = FireReport()
    grace = timedelta(seconds=settings.SWITCHYARD_SCHEDULE_GRACE_SECONDS)
    due = list(Schedule.objects.filter(enabled=True, next_run_at__lte=now)
               .values_list("pk", flat=True))
    for schedule_id in due:
        with transaction.atomic():
            schedule = (Schedule.objects.select_for_update(skip_locked=True, of=("self",))
                        .select_related("task", "task__project", "created_by")
                        .filter(pk=schedule_id, enabled=True, next_run_at__lte=now).first())
            if schedule is None:
                continue  # another worker is firing it, or it moved on meanwhile
            last, count = _slots_between(schedule, schedule.next_run_at, now)
            slot = last[0] if last else None
            skipped = max(0, count - 1)
            notes = []
            if slot is not None and now - slot > grace:
                skipped += 1
                slot = None
            if skipped:
                notes.append(f"skipped {skipped}{'+' if count >= MAX_COUNTED else ''} slot(s) "
                             f"from {schedule.next_run_at:%Y-%m-%d %H:%M} UTC: no worker ticked "
                             "in time (missed slots are not replayed)")
                report.skipped += skipped
            owner_problem = _owner_problem(schedule)
            if slot is not None and owner_problem:
                notes.append(f"the {slot:%Y-%m-%d %H:%M} UTC slot was not launched: "
                             f"{owner_problem}")
                report.refused += 1
                schedule.last_slot_at = slot
                slot = None
            if slot is not None:
                key = f"schedule:{schedule.pk}:{slot:%Y-%m-%dT%H:%MZ}"
                actor = Actor(user=schedule.created_by, via="system",
                              label=f"schedule {schedule.name}")
                try:
                    run, created = run_launch(task=schedule.task, raw_params=schedule.params,
                                              actor=actor, trigger=Trigger.SCHEDULE,
                                              idempotency_key=key, now=now)
                    schedule.last_run = run
                    report.fired += int(created)
                except (ApplicationError, NotFound) as exc:
                    notes.append(f"the {slot:%Y-%m-%d %H:%M} UTC slot was not launched: "
                                 f"{exc.message}")
                    report.refused += 1
                schedule.last_slot_at = slot
            schedule.skipped_slots += skipped
            if notes:
                schedule.last_note = "; ".join(notes)[:500]
                logger.warning("schedule %s (%s): %s", schedule.pk, schedule.name,
                               schedule.last_note)
            schedule.next_run_at = next_slot(schedule, now)
            schedule.save(update_fields=["last_run", "last_slot_at", "skipped_slots",
                                         "last_note", "next_run_at", "updated_at"])
    return report
