"""Writes to projects' configuration: members and tasks. Every change is audited in its
transaction; task definitions are validated with the same rules as the admin (Task.clean)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from runs.errors import Conflict, InvalidInput, NotFound
from runs.models import Membership, Project, Role, Task
from runs.transitions import Actor, audit_write

TASK_FIELDS = ("name", "description", "kind", "spec", "params_schema", "timeout_seconds",
               "enabled", "max_attempts", "retry_backoff", "retry_on", "concurrency_key",
               "concurrency_limit", "priority", "max_parallel", "run_deadline_seconds",
               "artifact_globs", "diff_minor_ratio", "diff_major_ratio", "diff_pixel_tolerance")


def member_add(*, project: Project, username: str, role: str, actor: Actor) -> Membership:
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise InvalidInput("No active user with that username.",
                           fields={"username": ["no active user with this username"]})
    try:
        with transaction.atomic():
            membership = Membership.objects.create(project=project, user=user, role=role)
            audit_write(actor=actor, action="membership.create", obj=membership,
                        now=timezone.now(), project_id=project.pk,
                        changes={"user": username, "role": role})
    except IntegrityError:
        raise Conflict(f"{username} is already a member of {project.slug}; change their "
                       "role instead.") from None
    return membership


def _membership(project: Project, username: str) -> Membership:
    membership = Membership.objects.select_related("user").filter(
        project=project, user__username=username).first()
    if membership is None:
        raise NotFound(f"{username!r} is not a member of project {project.slug!r}.")
    return membership


def _keep_a_maintainer(project: Project, membership: Membership) -> None:
    others = Membership.objects.filter(project=project, role=Role.MAINTAINER).exclude(
        pk=membership.pk)
    if membership.role == Role.MAINTAINER and not others.exists():
        raise Conflict("A project needs at least one maintainer; make someone else "
                       "maintainer first.")


def member_update(*, project: Project, username: str, role: str, actor: Actor) -> Membership:
    with transaction.atomic():
        membership = _membership(project, username)
        if role != Role.MAINTAINER:
            _keep_a_maintainer(project, membership)
        previous = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit_write(actor=actor, action="membership.update", obj=membership, now=timezone.now(),
                    project_id=project.pk, changes={"user": username, "role": [previous, role]})
    return membership


def member_remove(*, project: Project, username: str, actor: Actor) -> None:
    with transaction.atomic():
        membership = _membership(project, username)
        _keep_a_maintainer(project, membership)
        audit_write(actor=actor, action="membership.delete", obj=membership, now=timezone.now(),
                    project_id=project.pk, changes={"user": username, "role": membership.role})
        membership.delete()


def _validated(task: Task) -> None:
    try:
        task.full_clean(exclude=["project"])
    except ValidationError as exc:
        fields = {name: [str(m) for m in messages]
                  for name, messages in exc.message_dict.items()}
        raise InvalidInput("The task definition is invalid; see the errors per field.",
                           fields=fields) from None


def task_create(*, project: Project, slug: str, data: dict[str, Any], actor: Actor) -> Task:
    task = Task(project=project, slug=slug, **{k: v for k, v in data.items()
                                               if k in TASK_FIELDS and v is not None})
    _validated(task)
    try:
        with transaction.atomic():
            task.save()
            audit_write(actor=actor, action="task.create", obj=task, now=timezone.now(),
                        project_id=project.pk, changes={"slug": slug, **_shown(data)})
    except IntegrityError:
        raise Conflict(f"Project {project.slug!r} already has a task {slug!r}.") from None
    return task


def task_update(*, task: Task, data: dict[str, Any], actor: Actor) -> Task:
    changes = {}
    for name, value in data.items():
        if name in TASK_FIELDS and getattr(task, name) != value:
            changes[name] = value
            setattr(task, name, value)
    _validated(task)
    with transaction.atomic():
        task.save()
        audit_write(actor=actor, action="task.update", obj=task, now=timezone.now(),
                    project_id=task.project_id, changes=_shown(changes))
    return task


def task_delete(*, task: Task, actor: Actor) -> None:
    if task.runs.exists():
        raise Conflict(f"Task {task.slug!r} has runs and their history keeps it; disable it "
                       "instead (PATCH {\"enabled\": false}).")
    with transaction.atomic():
        audit_write(actor=actor, action="task.delete", obj=task, now=timezone.now(),
                    project_id=task.project_id, changes={"slug": task.slug})
        task.delete()


def _shown(data: dict[str, Any]) -> dict[str, Any]:
    # Definitions are not secret, but keep audit rows small: big specs by name only.
    return {k: (v if k not in ("spec", "params_schema") else "(changed)") for k, v in data.items()}
