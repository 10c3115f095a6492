"""The back office for project configuration: tasks (definitions validated field by field, bad
JSON a form error, a Launch button, enable/disable), memberships through the member services,
projects audited, and API tokens read-only with a Revoke action through the API's service.

Every change is driven through the admin's own pages and checked for its audit row: via
"admin", by the staff user.
"""

from __future__ import annotations

import pytest
from django.test import Client

from runs.models import ApiToken, AuditLog, Membership, Project, Role, Run, Task
from runs.services import api_token_authenticate, api_token_create, run_launch
from runs.transitions import SYSTEM, Actor, run_cancel
from tests.admin_pages import act, messages_on, staff_client
from tests.factories import MembershipFactory, ProjectFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db

TASKS = "/admin/runs/task/"
MEMBERS = "/admin/runs/membership/"
PROJECTS = "/admin/runs/project/"
TOKENS = "/admin/runs/apitoken/"


@pytest.fixture
def root() -> Client:
    return staff_client()


def form_data(client: Client, url: str) -> dict:
    """What the admin's form at `url` would post unchanged (as a browser would)."""
    response = client.get(url)
    assert response.status_code == 200
    form = response.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if value is None or value is False:
            continue
        data[name] = "on" if value is True else value
        if field.show_hidden_initial:  # fields with a callable default post their initial too
            data[f"initial-{name}"] = value
    return data


def admin_audit(action: str) -> AuditLog:
    audit = AuditLog.objects.filter(action=action).latest("id")
    assert (audit.via, audit.actor_label, audit.actor.username) == ("admin", "root", "root")
    return audit


# --- tasks: the definition form ----------------------------------------------------------------


def test_a_spec_error_is_shown_on_the_spec_field_and_nothing_is_saved(root, hello_task):
    url = f"{TASKS}{hello_task.pk}/change/"
    data = form_data(root, url)
    data["spec"] = '{"argv": ["echo", "{{ nobody }}"]}'
    response = root.post(url, data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["spec"]
    assert errors["spec"] == ["spec.argv[1]: refers to {{ nobody }} but the task has no "
                              "parameter 'nobody'"]
    assert "spec.argv[1]: refers to {{ nobody }}" in response.content.decode()
    hello_task.refresh_from_db()
    assert hello_task.spec == {"argv": ["echo", "Hello, {{ name }}!"]}
    assert not AuditLog.objects.filter(action="task.update").exists()


def test_a_parameter_schema_error_is_shown_on_its_field(root, hello_task):
    url = f"{TASKS}{hello_task.pk}/change/"
    data = form_data(root, url)
    data["params_schema"] = '[{"name": "name", "type": "colour"}]'
    response = root.post(url, data)
    errors = response.context["adminform"].form.errors
    assert errors == {"params_schema": ["params_schema[0].type: must be one of string, text, "
                                        "integer, number, boolean, choice, secret"]}


def test_bad_json_is_a_form_error_that_says_where(root, hello_task):
    url = f"{TASKS}{hello_task.pk}/change/"
    data = form_data(root, url)
    data["spec"] = '{"argv": ["echo",]}'
    response = root.post(url, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["spec"] == [
        "Not valid JSON: Expecting value (line 1, column 18)."]
    # What was typed comes back as typed, to be fixed.
    assert '{&quot;argv&quot;: [&quot;echo&quot;,]}' in response.content.decode()


@pytest.mark.parametrize("field", ["retry_on", "retry_backoff", "artifact_globs", "spec"])
@pytest.mark.parametrize("typed", ["", "null"])
def test_an_empty_json_field_is_a_form_error_not_a_server_error(root, hello_task, field, typed):
    url = f"{TASKS}{hello_task.pk}/change/"
    data = form_data(root, url)
    data[field] = typed
    response = root.post(url, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field][0].startswith("Enter JSON here")


def test_the_json_fields_are_shown_indented(root, hello_task):
    page = root.get(f"{TASKS}{hello_task.pk}/change/").content.decode()
    assert '{\n  &quot;argv&quot;: [\n    &quot;echo&quot;,' in page


def test_saving_a_task_is_audited_as_the_staff_user(root, hello_task):
    url = f"{TASKS}{hello_task.pk}/change/"
    data = form_data(root, url)
    data.update(spec='{"argv": ["echo", "Hi, {{ name }}"]}', timeout_seconds="30")
    response = root.post(url, data, headers={"User-Agent": "admin-browser"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    hello_task.refresh_from_db()
    assert (hello_task.spec["argv"][1], hello_task.timeout_seconds) == ("Hi, {{ name }}", 30)
    audit = admin_audit("task.update")
    assert audit.changes == {"spec": "(changed)", "timeout_seconds": 30}
    assert audit.user_agent == "admin-browser" and audit.project_id == hello_task.project_id


def test_adding_a_task_is_audited(root, project):
    response = root.post(f"{TASKS}add/", {
        "project": project.pk, "slug": "new", "name": "New", "kind": "command",
        "spec": '{"argv": ["true"]}', "params_schema": "[]", "timeout_seconds": "60",
        "max_attempts": "1", "retry_backoff": "[60]", "retry_on": '["failure"]',
        "concurrency_limit": "1", "priority": "0", "max_parallel": "0",
        "artifact_globs": "[]", "diff_minor_ratio": "0.0001", "diff_major_ratio": "0.01",
        "diff_pixel_tolerance": "0", "enabled": "on"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    task = Task.objects.get(slug="new")
    audit = admin_audit("task.create")
    assert audit.object_id == str(task.pk) and audit.changes["slug"] == "new"


def test_the_baseline_and_the_project_are_not_edited_in_the_form(root, hello_task):
    form = root.get(f"{TASKS}{hello_task.pk}/change/").context["adminform"].form
    assert "baseline_run" not in form.fields and "project" not in form.fields


# --- tasks: launch, enable, disable, delete ---------------------------------------------------


def test_a_task_page_has_a_launch_button_to_the_launch_form(root, hello_task):
    page = root.get(f"{TASKS}{hello_task.pk}/change/").content.decode()
    launch = f"/p/{hello_task.project.slug}/tasks/{hello_task.slug}/launch"
    assert f'<a href="{launch}" class="sy-launch">Launch</a>' in page
    assert f"/admin/runs/run/?task__id__exact={hello_task.pk}" in page
    assert f'<a href="{launch}">launch</a>' in root.get(TASKS).content.decode()


def test_staff_launch_from_the_launch_form_with_its_validation(root, hello_task):
    launch = f"/p/{hello_task.project.slug}/tasks/{hello_task.slug}/launch"
    assert root.get(launch).status_code == 200  # staff are maintainers of every project
    refused = root.post(launch, {"name": ""})
    assert refused.status_code == 422 and not Run.objects.exists()
    response = root.post(launch, {"name": "Ada", "count": "2"})
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert (run.created_by.username, run.params) == ("root", {"name": "Ada", "count": 2})


def test_a_disabled_task_has_no_launch_button(root, hello_task):
    Task.objects.filter(pk=hello_task.pk).update(enabled=False)
    page = root.get(f"{TASKS}{hello_task.pk}/change/").content.decode()
    assert 'class="sy-launch"' not in page


def test_disable_and_enable_selected_tasks_through_the_service(root, hello_task, project):
    other = TaskFactory(project=project, slug="other", enabled=False)
    shown = act(root, TASKS, "disable_tasks", [hello_task.pk, other.pk])
    assert ("success", "Disabled 1 task: Task demo/hello.") in shown
    assert ("warning", "Task demo/other not changed: it is already disabled.") in shown
    hello_task.refresh_from_db()
    assert hello_task.enabled is False
    assert admin_audit("task.update").changes == {"enabled": False}

    assert act(root, TASKS, "enable_tasks", [hello_task.pk]) == [
        ("success", "Enabled 1 task: Task demo/hello.")]
    hello_task.refresh_from_db()
    assert hello_task.enabled is True
    assert admin_audit("task.update").changes == {"enabled": True}


def test_a_task_without_runs_is_deleted_through_the_service(root, project):
    task = TaskFactory(project=project, slug="unused")
    response = root.post(f"{TASKS}{task.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Task.objects.filter(pk=task.pk).exists()
    assert admin_audit("task.delete").changes == {"slug": "unused"}


def test_a_task_with_runs_has_no_delete_button(root, hello_task, personas):
    run_launch(task=hello_task, raw_params={"name": "x"}, actor=Actor(via="ui", label="bob"))
    assert root.get(f"{TASKS}{hello_task.pk}/delete/").status_code == 403
    assert root.post(f"{TASKS}{hello_task.pk}/delete/", {"post": "yes"}).status_code == 403
    assert "delete_selected" not in root.get(TASKS).content.decode()
    assert Task.objects.filter(pk=hello_task.pk).exists()


def test_clear_the_baseline_of_selected_tasks(root, hello_task, project):
    from artifacts.services import baseline_set

    run, _ = run_launch(task=hello_task, raw_params={"name": "x"}, actor=SYSTEM)
    run_cancel(run_id=run.pk, actor=SYSTEM)
    run.refresh_from_db()
    baseline_set(run, actor=SYSTEM)
    bare = TaskFactory(project=project, slug="bare")
    shown = act(root, TASKS, "clear_baselines", [hello_task.pk, bare.pk])
    assert ("success", "Cleared the baseline of 1 task: Task demo/hello.") in shown
    assert ("warning", "Task demo/bare not changed: it has no baseline.") in shown
    hello_task.refresh_from_db()
    assert hello_task.baseline_run_id is None
    assert admin_audit("task.baseline").changes == {"baseline_run": [run.pk, None]}


# --- memberships -----------------------------------------------------------------------------


def test_adding_a_member_goes_through_the_service(root, project, personas):
    dave = UserFactory(username="dave")
    response = root.post(f"{MEMBERS}add/", {"project": project.pk, "user": dave.pk,
                                            "role": Role.OPERATOR})
    assert response.status_code == 302
    membership = Membership.objects.get(user=dave)
    assert response["Location"] == MEMBERS
    audit = admin_audit("membership.create")
    assert (audit.object_id, audit.changes) == (str(membership.pk),
                                                {"user": "dave", "role": "operator"})


def test_a_member_twice_or_an_inactive_user_is_a_form_error(root, project, personas):
    twice = root.post(f"{MEMBERS}add/", {"project": project.pk, "user": personas["bob"].pk,
                                         "role": Role.VIEWER})
    assert twice.status_code == 200
    assert "already exists" in str(twice.context["adminform"].form.errors)
    gone = UserFactory(username="gone", is_active=False)
    inactive = root.post(f"{MEMBERS}add/", {"project": project.pk, "user": gone.pk,
                                            "role": Role.VIEWER})
    assert "user" in inactive.context["adminform"].form.errors
    assert not AuditLog.objects.filter(action="membership.create").exists()


def test_changing_a_role_goes_through_the_service(root, project, personas):
    bob = Membership.objects.get(user=personas["bob"])
    url = f"{MEMBERS}{bob.pk}/change/"
    assert set(root.get(url).context["adminform"].form.fields) == {"role"}
    response = root.post(url, {"role": Role.MAINTAINER})
    assert response.status_code == 302
    bob.refresh_from_db()
    assert bob.role == Role.MAINTAINER
    assert admin_audit("membership.update").changes == {"user": "bob",
                                                        "role": ["operator", "maintainer"]}


def test_the_last_maintainer_cannot_be_demoted(root, project, personas):
    alice = Membership.objects.get(user=personas["alice"])
    response = root.post(f"{MEMBERS}{alice.pk}/change/", {"role": Role.VIEWER})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["role"] == [
        "A project needs at least one maintainer; make someone else maintainer first."]
    alice.refresh_from_db()
    assert alice.role == Role.MAINTAINER


def test_deleting_the_last_maintainer_is_refused_with_a_message(root, project, personas):
    alice = Membership.objects.get(user=personas["alice"])
    response = root.post(f"{MEMBERS}{alice.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert response["Location"] == f"{MEMBERS}{alice.pk}/change/"
    assert messages_on(root.get(response["Location"]).content.decode()) == [
        ("error", "Nothing was deleted. A project needs at least one maintainer; make someone "
                  "else maintainer first.")]
    assert Membership.objects.filter(pk=alice.pk).exists()
    assert not AuditLog.objects.filter(action="membership.delete").exists()


def test_deleting_a_member_is_audited(root, project, personas):
    carol = Membership.objects.get(user=personas["carol"])
    assert root.post(f"{MEMBERS}{carol.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Membership.objects.filter(pk=carol.pk).exists()
    assert admin_audit("membership.delete").changes == {"user": "carol", "role": "viewer"}


def test_remove_selected_members(root, project, personas):
    ids = list(Membership.objects.order_by("pk").values_list("pk", flat=True))  # alice bob carol
    shown = act(root, MEMBERS, "remove_members", ids)
    assert ("success", "Removed 2 members: Membership of bob in demo, Membership of carol in "
            "demo.") in shown
    assert ("warning", "Membership of alice in demo not removed: A project needs at least one "
            "maintainer; make someone else maintainer first.") in shown
    assert list(Membership.objects.values_list("user__username", flat=True)) == ["alice"]
    assert AuditLog.objects.filter(action="membership.delete", via="admin").count() == 2


# --- projects ----------------------------------------------------------------------------------


def test_creating_and_editing_a_project_is_audited(root):
    response = root.post(f"{PROJECTS}add/", {"slug": "ops", "name": "Ops",
                                             "memberships-TOTAL_FORMS": "0",
                                             "memberships-INITIAL_FORMS": "0"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    project = Project.objects.get(slug="ops")
    assert admin_audit("project.create").changes == {"slug": "ops", "name": "Ops"}
    response = root.post(f"{PROJECTS}{project.pk}/change/", {
        "slug": "ops", "name": "Operations", "retention_days": "30",
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"})
    assert response.status_code == 302
    assert admin_audit("project.update").changes == {"name": "Operations", "retention_days": 30}


def test_a_project_lists_its_members_read_only_and_links_onwards(root, project, personas):
    page = root.get(f"{PROJECTS}{project.pk}/change/").content.decode()
    assert "alice" in page and "Maintainer" in page
    assert 'name="memberships-0-role"' not in page  # roles change on the member's own page
    assert f"/admin/runs/membership/add/?project={project.pk}" in page


def test_a_project_whose_runs_were_pruned_is_deleted_with_its_webhooks(root):
    from django.utils import timezone

    from hooks.models import WebhookDelivery, WebhookEndpoint

    project = ProjectFactory(slug="old")
    now = timezone.now()
    endpoint = WebhookEndpoint.objects.create(project=project, url="http://127.0.0.1:9/",
                                              secret_encrypted="x", created_at=now,
                                              updated_at=now)
    WebhookDelivery.objects.create(endpoint=endpoint, event_type="run.succeeded",
                                   event_id="msg_1", payload={}, run=None, created_at=now)
    assert root.post(f"{PROJECTS}{project.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Project.objects.filter(pk=project.pk).exists()
    assert not WebhookDelivery.objects.exists()


def test_a_project_with_runs_has_no_delete_button(root, hello_task):
    run_launch(task=hello_task, raw_params={"name": "x"}, actor=SYSTEM)
    assert root.get(f"{PROJECTS}{hello_task.project_id}/delete/").status_code == 403
    empty = ProjectFactory(slug="empty")
    assert root.post(f"{PROJECTS}{empty.pk}/delete/", {"post": "yes"}).status_code == 302
    assert admin_audit("project.delete").changes == {"slug": "empty"}


# --- API tokens --------------------------------------------------------------------------------


@pytest.fixture
def tokens(personas) -> list[tuple[ApiToken, str]]:
    return [api_token_create(user=personas["bob"], name=f"ci-{i}") for i in range(2)]


def test_revoke_selected_tokens_through_the_service(root, tokens):
    (first, secret), (second, _) = tokens
    ApiToken.objects.filter(pk=second.pk).update(revoked_at="2026-01-02T03:04:00Z")
    shown = act(root, TOKENS, "revoke_tokens", [first.pk, second.pk])
    assert ("success", f"Revoked 1 token: Token {first.prefix}… (ci-0).") in shown
    assert ("warning", f"Token {second.prefix}… (ci-1) not revoked: it was already revoked on "
            "2026-01-02 03:04 UTC.") in shown
    first.refresh_from_db()
    assert first.revoked_at is not None
    assert api_token_authenticate(secret) is None
    assert admin_audit("api_token.revoke").object_id == str(first.pk)


def test_token_hashes_and_secrets_are_never_shown(root, tokens):
    (token, secret), _ = tokens
    for url in (TOKENS, f"{TOKENS}{token.pk}/change/"):
        page = root.get(url).content.decode()
        assert token.prefix in page
        assert token.token_hash not in page and secret not in page
        assert "token_hash" not in page


def test_tokens_are_read_only_and_never_deleted_here(root, tokens):
    (token, _), _ = tokens
    change = root.get(f"{TOKENS}{token.pk}/change/")
    assert change.status_code == 200 and 'name="_save"' not in change.content.decode()
    assert root.post(f"{TOKENS}{token.pk}/change/", {"name": "x"}).status_code == 403
    assert root.get(f"{TOKENS}add/").status_code == 403
    assert root.post(f"{TOKENS}{token.pk}/delete/", {"post": "yes"}).status_code == 403
    assert "delete_selected" not in root.get(TOKENS).content.decode()
    token.refresh_from_db()
    assert token.name == "ci-0"


def test_staff_who_may_only_view_tokens_cannot_revoke(tokens):
    (token, _), _ = tokens
    viewer = staff_client("auditor", superuser=False, perms=("runs.view_apitoken",))
    assert "revoke_tokens" not in viewer.get(TOKENS).content.decode()
    viewer.post(TOKENS, {"action": "revoke_tokens", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is None


def test_the_token_list_filters_by_state(root, tokens):
    (active, _), (revoked, _) = tokens
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at="2026-01-02T03:04:00Z")
    page = root.get(f"{TOKENS}?state=revoked").content.decode()
    assert revoked.prefix in page and active.prefix not in page
    page = root.get(f"{TOKENS}?state=active").content.decode()
    assert active.prefix in page and revoked.prefix not in page


def test_a_member_of_another_project_is_listed_with_the_project(root, personas):
    other = ProjectFactory(slug="other")
    MembershipFactory(project=other, user=personas["mallory"], role=Role.VIEWER)
    page = root.get(f"{MEMBERS}?project__id__exact={other.pk}").content.decode()
    assert "mallory" in page and "alice" not in page
