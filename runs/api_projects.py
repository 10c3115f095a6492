"""REST endpoints for projects, members and tasks (reads for every member; writes for
maintainers), and for the caller's own API tokens."""

from __future__ import annotations

from datetime import timedelta

from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router, Status

from runs import selectors
from runs.api import actor_for
from runs.errors import NotFound
from runs.models import ApiToken, Membership, Project, Role, Task
from runs.project_services import (
    member_add,
    member_remove,
    member_update,
    task_create,
    task_delete,
    task_update,
)
from runs.schemas import (
    ErrorOut,
    MemberIn,
    MemberOut,
    MemberPage,
    MemberRoleIn,
    ProjectOut,
    ProjectPage,
    TaskCreateIn,
    TaskDetailOut,
    TaskPage,
    TaskWriteFields,
    TokenCreatedOut,
    TokenIn,
    TokenPage,
)
from runs.services import api_token_create, api_token_revoke

router = Router(tags=["projects"])
tokens = Router(tags=["tokens"])

READ = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut}
WRITE = {**READ, 403: ErrorOut, 409: ErrorOut, 422: ErrorOut}


@router.get("/projects", response={200: ProjectPage, **READ}, operation_id="projects_list")
def projects_list(request: HttpRequest, cursor: str | None = None,
                  limit: int = Query(100, ge=1, le=200)):
    """Projects you are a member of (all projects for staff), with your role."""
    qs = selectors.projects_for_user(request.user).distinct().order_by("-id")
    rows, next_cursor = selectors.keyset_page(qs, cursor=cursor, limit=limit)
    roles = dict(Membership.objects.filter(user=request.user).values_list("project_id", "role"))
    items = [{"slug": p.slug, "name": p.name, "description": p.description,
              "role": Role.MAINTAINER if request.user.is_staff else roles.get(p.pk),
              "retention_days": p.retention_days, "retention_runs": p.retention_runs}
             for p in rows]
    return {"items": items, "next_cursor": next_cursor}


@router.get("/projects/{project}", response={200: ProjectOut, **READ},
            operation_id="projects_get")
def projects_get(request: HttpRequest, project: str):
    """One project, with your role in it."""
    found = selectors.project_get(request.user, project)
    return {"slug": found.slug, "name": found.name, "description": found.description,
            "role": selectors.role_of(request.user, found),
            "retention_days": found.retention_days, "retention_runs": found.retention_runs}


@router.get("/projects/{project}/members", response={200: MemberPage, **READ},
            operation_id="members_list")
def members_list(request: HttpRequest, project: str, cursor: str | None = None,
                 limit: int = Query(100, ge=1, le=200)):
    """The project's members and their roles."""
    found = selectors.project_get(request.user, project)
    qs = Membership.objects.filter(project=found).select_related("user").order_by("-id")
    rows, next_cursor = selectors.keyset_page(qs, cursor=cursor, limit=limit)
    return {"items": [{"username": m.user.get_username(), "role": m.role,
                       "created_at": m.created_at} for m in rows], "next_cursor": next_cursor}


def _member_out(m: Membership) -> dict:
    return {"username": m.user.get_username(), "role": m.role, "created_at": m.created_at}


@router.post("/projects/{project}/members", response={201: MemberOut, **WRITE},
             operation_id="members_add")
def members_add(request: HttpRequest, project: str, body: MemberIn):
    """Add a member (maintainers)."""
    found = selectors.project_get(request.user, project, minimum=Role.MAINTAINER)
    membership = member_add(project=found, username=body.username, role=body.role,
                            actor=actor_for(request))
    return Status(201, _member_out(membership))


@router.patch("/projects/{project}/members/{username}", response={200: MemberOut, **WRITE},
              operation_id="members_update")
def members_update(request: HttpRequest, project: str, username: str, body: MemberRoleIn):
    """Change a member's role (maintainers). A project keeps at least one maintainer."""
    found = selectors.project_get(request.user, project, minimum=Role.MAINTAINER)
    return _member_out(member_update(project=found, username=username, role=body.role,
                                     actor=actor_for(request)))


@router.delete("/projects/{project}/members/{username}", response={204: None, **WRITE},
               operation_id="members_remove")
def members_remove(request: HttpRequest, project: str, username: str):
    """Remove a member (maintainers). A project keeps at least one maintainer."""
    found = selectors.project_get(request.user, project, minimum=Role.MAINTAINER)
    member_remove(project=found, username=username, actor=actor_for(request))
    return Status(204, None)


@router.get("/projects/{project}/tasks", response={200: TaskPage, **READ},
            operation_id="tasks_list")
def tasks_list(request: HttpRequest, project: str, cursor: str | None = None,
               limit: int = Query(100, ge=1, le=200)):
    """Tasks of a project, with their parameter schemas."""
    found = selectors.project_get(request.user, project)
    qs = Task.objects.filter(project=found).order_by("-id")
    rows, next_cursor = selectors.keyset_page(qs, cursor=cursor, limit=limit)
    return {"items": rows, "next_cursor": next_cursor}


@router.get("/projects/{project}/tasks/{task}", response={200: TaskDetailOut, **READ},
            operation_id="tasks_get")
def tasks_get(request: HttpRequest, project: str, task: str):
    """A task's full definition."""
    return selectors.task_get(request.user, project, task)


@router.post("/projects/{project}/tasks", response={201: TaskDetailOut, **WRITE},
             operation_id="tasks_create")
def tasks_create(request: HttpRequest, project: str, body: TaskCreateIn):
    """Create a task (maintainers). The definition is validated; errors name the field
    (e.g. `spec.argv[1]`)."""
    found = selectors.project_get(request.user, project, minimum=Role.MAINTAINER)
    data = body.dict(exclude={"slug"}, exclude_none=True)
    return Status(201, task_create(project=found, slug=body.slug, data=data,
                                   actor=actor_for(request)))


@router.patch("/projects/{project}/tasks/{task}", response={200: TaskDetailOut, **WRITE},
              operation_id="tasks_update")
def tasks_update(request: HttpRequest, project: str, task: str, body: TaskWriteFields):
    """Change a task (maintainers); runs already launched keep the definition they started
    with."""
    found = selectors.task_get(request.user, project, task, minimum=Role.MAINTAINER)
    return task_update(task=found, data=body.dict(exclude_unset=True, exclude_none=True),
                       actor=actor_for(request))


@router.delete("/projects/{project}/tasks/{task}", response={204: None, **WRITE},
               operation_id="tasks_delete")
def tasks_delete(request: HttpRequest, project: str, task: str):
    """Delete a task that has never run (maintainers); one with runs is disabled instead."""
    found = selectors.task_get(request.user, project, task, minimum=Role.MAINTAINER)
    task_delete(task=found, actor=actor_for(request))
    return Status(204, None)


# --- tokens ----------------------------------------------------------------------------------


@tokens.get("/tokens", response={200: TokenPage, **READ}, operation_id="tokens_list")
def tokens_list(request: HttpRequest, cursor: str | None = None,
                limit: int = Query(100, ge=1, le=200)):
    """Your API tokens (never their secret part)."""
    qs = ApiToken.objects.filter(user=request.user).order_by("-id")
    rows, next_cursor = selectors.keyset_page(qs, cursor=cursor, limit=limit)
    return {"items": rows, "next_cursor": next_cursor}


@tokens.post("/tokens", response={201: TokenCreatedOut, **WRITE}, operation_id="tokens_create")
def tokens_create(request: HttpRequest, body: TokenIn):
    """Create a token. The response holds the full token once; only a hash is stored."""
    expires = timezone.now() + timedelta(days=body.expires_in_days) if body.expires_in_days \
        else None
    row, token = api_token_create(user=request.user, name=body.name, expires_at=expires,
                                  actor=actor_for(request))
    return Status(201, {"id": row.pk, "name": row.name, "prefix": row.prefix,
                        "created_at": row.created_at, "expires_at": row.expires_at,
                        "last_used_at": row.last_used_at, "revoked_at": row.revoked_at,
                        "token": token})


@tokens.delete("/tokens/{int:token_id}", response={204: None, **WRITE},
               operation_id="tokens_revoke")
def tokens_revoke(request: HttpRequest, token_id: int):
    """Revoke one of your tokens (idempotent)."""
    row = ApiToken.objects.filter(pk=token_id, user=request.user).first()
    if row is None:
        raise NotFound(f"Token {token_id} not found.")
    api_token_revoke(token=row, actor=actor_for(request))
    return Status(204, None)


__all__ = ["Project", "router", "tokens"]
