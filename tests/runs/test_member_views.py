"""The members page of a project (runs.member_views): everyone in the project sees who has
which role; maintainers add people, change roles and remove members, through the same services
as the API, with an audit row each; viewers and operators get 403, outsiders 404.

Personas come from tests/conftest.py: alice (maintainer), bob (operator), carol (viewer) of
project `demo`, and mallory, who is in no project.
"""

from __future__ import annotations

import html
import re

import pytest

from runs.models import AuditLog, Membership, Role
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

MEMBERS = "/p/demo/members/"
HX = {"HX-Request": "true"}


def role_of(project, username: str) -> str | None:
    return Membership.objects.filter(project=project, user__username=username).values_list(
        "role", flat=True).first()


def messages_in(page: str) -> list[tuple[str, str]]:
    return [(level, html.unescape(text)) for level, text in
            re.findall(r'<li class="notice notice-(\w+)">(.*?)</li>', page, re.S)]


def test_members_see_everyone_and_their_roles_but_only_maintainers_get_forms(client_for,
                                                                              personas):
    for name in ("carol", "bob"):
        page = client_for(name).get(MEMBERS).content.decode()
        assert re.findall(r'<th scope="row" class="member-name">(\w+)', page) == [
            "alice", "bob", "carol"]
        assert 'class="tag tag-role-maintainer">Maintainer<' in page
        assert "<form" not in page.split("</header>")[1].split("<footer")[0].replace(
            'action="/logout/"', "")
        assert "Only a maintainer of Demo can add members" in page
    page = client_for("alice").get(MEMBERS).content.decode()
    assert 'action="/p/demo/members/add"' in page
    assert page.count('action="/p/demo/members/role"') == 3
    assert page.count('action="/p/demo/members/remove"') == 3
    assert 'hx-confirm="Remove bob from Demo? They will no longer see its tasks and runs."' in page


def test_a_maintainer_adds_a_member_with_a_role(client_for, project, personas):
    UserFactory(username="dave")
    client = client_for("alice")
    response = client.post(f"{MEMBERS}add", {"username": "dave", "role": "operator"},
                           headers={"User-Agent": "browser"})
    assert response.status_code == 303 and response["Location"] == MEMBERS
    assert role_of(project, "dave") == Role.OPERATOR
    audit = AuditLog.objects.get(action="membership.create")
    assert (audit.actor_label, audit.via, audit.project_id, audit.user_agent) == (
        "alice", "ui", project.pk, "browser")
    assert audit.changes == {"user": "dave", "role": "operator"}
    page = client.get(MEMBERS).content.decode()
    assert ("success", "dave is now operator of Demo.") in messages_in(page)
    assert re.search(r"alice\s+added <strong>dave</strong> as operator", page)


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ({"username": "nobody", "role": "viewer"}, 422, "No active user"),
        ({"username": "", "role": "viewer"}, 422, "This field is required"),
        ({"username": "x" * 151, "role": "viewer"}, 422, "at most 150 characters"),
        ({"username": "a\x00b", "role": "viewer"}, 422, "Null characters are not allowed"),
        ({"username": "mallory", "role": "owner"}, 422, "Select a valid choice"),
        ({"username": "bob", "role": "viewer"}, 409, "bob is already a member of demo"),
    ],
)
def test_adding_a_member_refuses_bad_input_on_the_form(client_for, project, personas, data,
                                                       status, message):
    before = Membership.objects.count()
    response = client_for("alice").post(f"{MEMBERS}add", data)
    assert response.status_code == status
    assert message in html.unescape(response.content.decode())
    assert Membership.objects.count() == before
    assert not AuditLog.objects.filter(action="membership.create").exists()


def test_a_maintainer_changes_a_role(client_for, project, personas):
    response = client_for("alice").post(f"{MEMBERS}role", {"username": "carol",
                                                           "role": "operator"})
    assert response.status_code == 303
    assert role_of(project, "carol") == Role.OPERATOR
    audit = AuditLog.objects.get(action="membership.update")
    assert audit.changes == {"user": "carol", "role": ["viewer", "operator"]}


def test_with_htmx_a_role_change_sends_the_browser_back_to_the_members_page(client_for,
                                                                           project):
    response = client_for("alice").post(f"{MEMBERS}role", {"username": "carol",
                                                           "role": "maintainer"}, headers=HX)
    assert response["HX-Redirect"] == MEMBERS
    assert role_of(project, "carol") == Role.MAINTAINER


def test_the_last_maintainer_keeps_the_role_with_a_message(client_for, project):
    client = client_for("alice")
    response = client.post(f"{MEMBERS}role", {"username": "alice", "role": "viewer"})
    assert response.status_code == 303
    assert role_of(project, "alice") == Role.MAINTAINER
    page = client.get(MEMBERS).content.decode()
    assert ("error", "A project needs at least one maintainer; make someone else maintainer "
                     "first.") in messages_in(page)
    response = client.post(f"{MEMBERS}remove", {"username": "alice"})
    assert role_of(project, "alice") == Role.MAINTAINER


def test_changing_the_role_of_someone_not_a_member_is_a_message(client_for, project):
    client = client_for("alice")
    client.post(f"{MEMBERS}role", {"username": "mallory", "role": "viewer"})
    page = client.get(MEMBERS).content.decode()
    assert ("error", "'mallory' is not a member of project 'demo'.") in messages_in(page)
    assert role_of(project, "mallory") is None


def test_a_maintainer_removes_a_member(client_for, project, personas):
    response = client_for("alice").post(f"{MEMBERS}remove", {"username": "bob"})
    assert response.status_code == 303 and response["Location"] == MEMBERS
    assert role_of(project, "bob") is None
    assert AuditLog.objects.get(action="membership.delete").changes == {"user": "bob",
                                                                         "role": "operator"}
    assert client_for("bob").get("/p/demo/").status_code == 404


def test_a_maintainer_who_removes_themselves_lands_on_the_dashboard(client_for, project,
                                                                    personas):
    MembershipFactory(project=project, user=UserFactory(username="erin"), role=Role.MAINTAINER)
    response = client_for("alice").post(f"{MEMBERS}remove", {"username": "alice"})
    assert response["Location"] == "/"
    assert role_of(project, "alice") is None


@pytest.mark.parametrize("action", ["add", "role", "remove"])
def test_only_maintainers_write_outsiders_get_404(client_for, project, action):
    data = {"username": "carol", "role": "operator"}
    assert client_for("bob").post(f"{MEMBERS}{action}", data).status_code == 403
    assert client_for("carol").post(f"{MEMBERS}{action}", data).status_code == 403
    assert client_for("mallory").post(f"{MEMBERS}{action}", data).status_code == 404
    assert client_for("mallory").get(MEMBERS).status_code == 404
    assert role_of(project, "carol") == Role.VIEWER
    assert not AuditLog.objects.exists()


@pytest.mark.parametrize("action", ["add", "role", "remove"])
def test_member_writes_are_post_only_and_need_the_csrf_token(client_for, project, action):
    assert client_for("alice").get(f"{MEMBERS}{action}").status_code == 405
    strict = client_for("alice", enforce_csrf_checks=True)
    response = strict.post(f"{MEMBERS}{action}", {"username": "carol", "role": "operator"})
    assert response.status_code == 403
    assert b"This form has expired" in response.content
    assert role_of(project, "carol") == Role.VIEWER


@pytest.mark.parametrize(
    "data",
    [{}, {"username": ["a", "b"], "role": ["x"]}, {"username": "carol", "role": "x" * 5000},
     {"username": "carol\x00", "role": "viewer"},
     # Bytes that are no UTF-8 (a lone surrogate, encoded): Django decodes them replaced.
     b"username=%ED%A0%80&role=viewer", b"username=%FF%FE&role=%00"],
)
@pytest.mark.parametrize("action", ["add", "role", "remove"])
def test_no_member_input_causes_a_500(client_for, project, action, data):
    client = client_for("alice")
    if isinstance(data, bytes):
        response = client.post(f"{MEMBERS}{action}", data,
                               content_type="application/x-www-form-urlencoded")
    else:
        response = client.post(f"{MEMBERS}{action}", data)
    assert response.status_code < 500


def test_the_members_page_query_count_does_not_grow(client_for, project,
                                                    django_assert_num_queries):
    # session, user, project, role (project_get), role, members, audit rows, and the worker
    # banner's two.
    def more(n: int) -> None:
        for _ in range(n):
            MembershipFactory(project=project, user=UserFactory(), role=Role.OPERATOR)

    client = client_for("alice")
    more(3)
    with django_assert_num_queries(9):
        assert client.get(MEMBERS).status_code == 200
    more(6)
    client.post(f"{MEMBERS}role", {"username": "carol", "role": "operator"})
    with django_assert_num_queries(9):
        assert client.get(MEMBERS).status_code == 200
