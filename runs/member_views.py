"""The members page of a project: who has which role, and for maintainers the forms to add a
person by username, change a role and remove a member, with the latest membership changes
from the audit log.

Every write goes through `runs.project_services` (the same functions as the API), which
validates, keeps at least one maintainer and writes the audit row in the change's transaction.
Reading needs any role in the project (outsiders get 404); writing needs maintainer (403).
The forms are plain POSTs that work without JavaScript; with htmx, changing a role and removing
a member ask for confirmation first.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from runs import selectors
from runs.errors import Conflict, InvalidInput, NotFound
from runs.forms import MemberAddForm, MemberRemoveForm, MemberRoleForm
from runs.models import Project, Role
from runs.project_services import member_add, member_remove, member_update
from runs.views import actor_for, after_post, page

# Members listed on one page. Projects are teams, not populations: past this the page says
# so, and the API (GET /api/projects/{project}/members) pages through all of them.
MEMBERS_MAX = 500
AUDIT_SHOWN = 10


@require_GET
@page
def project_members(request: HttpRequest, slug: str) -> HttpResponse:
    """The members and their roles; the management forms for maintainers."""
    project = selectors.project_get(request.user, slug)
    return _members_render(request, project, add_form=MemberAddForm())


def _members_render(request: HttpRequest, project: Project, *, add_form: MemberAddForm,
                    status: int = 200, error: str = "") -> HttpResponse:
    role = selectors.role_of(request.user, project)
    can_manage = role == Role.MAINTAINER
    members = selectors.members_of(project, limit=MEMBERS_MAX + 1)
    return render(request, "runs/project_members.html", {
        "project": project,
        "members": members[:MEMBERS_MAX],
        "truncated": len(members) > MEMBERS_MAX,
        "members_max": MEMBERS_MAX,
        "role": Role(role).label if role else "",
        "can_manage": can_manage,
        "roles": Role.choices,
        "add_form": add_form,
        "error": error,
        "audit": selectors.audit_for_project(project, prefix="membership.",
                                             limit=AUDIT_SHOWN) if can_manage else [],
        "nav": "projects",
        "tab": "members",
    }, status=status)


def _members_url(project: Project) -> str:
    return reverse("project_members", args=[project.slug])


@require_POST
@page
def member_add_view(request: HttpRequest, slug: str) -> HttpResponseBase:
    """Add a person by username with a role. Problems re-render the form with the error on
    its field (422), or say that they are a member already (409)."""
    project = selectors.project_get(request.user, slug, minimum=Role.MAINTAINER)
    form = MemberAddForm(request.POST)
    if not form.is_valid():
        return _members_render(request, project, add_form=form, status=422,
                               error="The member was not added; see the errors below.")
    username = form.cleaned_data["username"].strip()
    try:
        membership = member_add(project=project, username=username,
                                role=form.cleaned_data["role"], actor=actor_for(request))
    except InvalidInput as exc:
        for name, problems in exc.fields.items():
            for problem in problems:
                form.add_error(name if name in form.fields else None, problem)
        return _members_render(request, project, add_form=form, status=422, error=exc.message)
    except Conflict as exc:
        return _members_render(request, project, add_form=form, status=409, error=exc.message)
    messages.success(request, f"{username} is now {Role(membership.role).label.lower()} of "
                              f"{project.name}.")
    return after_post(request, _members_url(project))


@require_POST
@page
def member_role_view(request: HttpRequest, slug: str) -> HttpResponseBase:
    """Change a member's role. Taking the last maintainer's role away is refused with a
    message saying what to do instead."""
    project = selectors.project_get(request.user, slug, minimum=Role.MAINTAINER)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a member and one of the roles viewer, operator or "
                                "maintainer, then try again.")
        return after_post(request, _members_url(project))
    username, role = form.cleaned_data["username"], form.cleaned_data["role"]
    try:
        member_update(project=project, username=username, role=role, actor=actor_for(request))
    except (Conflict, NotFound) as exc:
        messages.error(request, exc.message)
        return after_post(request, _members_url(project))
    messages.success(request, f"{username} is now {Role(role).label.lower()} of "
                              f"{project.name}.")
    # A maintainer who made themselves operator can still see the page, but no longer manage.
    return after_post(request, _members_url(project))


@require_POST
@page
def member_remove_view(request: HttpRequest, slug: str) -> HttpResponseBase:
    """Remove a member. Removing the last maintainer is refused; a maintainer who removes
    themselves lands on their projects (this one is no longer theirs to see)."""
    project = selectors.project_get(request.user, slug, minimum=Role.MAINTAINER)
    form = MemberRemoveForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose the member to remove, then try again.")
        return after_post(request, _members_url(project))
    username = form.cleaned_data["username"]
    try:
        member_remove(project=project, username=username, actor=actor_for(request))
    except (Conflict, NotFound) as exc:
        messages.error(request, exc.message)
        return after_post(request, _members_url(project))
    messages.success(request, f"{username} was removed from {project.name}.")
    if username == request.user.get_username() and not request.user.is_staff:
        return after_post(request, reverse("home"))
    return after_post(request, _members_url(project))
