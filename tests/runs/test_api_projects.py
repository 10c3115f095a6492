"""Projects, members, tasks and tokens through the API: roles, validation, pagination, audit."""

from __future__ import annotations

import pytest

from runs.models import ApiToken, AuditLog, Membership, Task

TASKS = "/api/projects/demo/tasks"
MEMBERS = "/api/projects/demo/members"


def test_members_are_listed_for_every_member(api_for, personas):
    body = api_for("carol").get(MEMBERS).json()
    assert {m["username"]: m["role"] for m in body["items"]} == {
        "alice": "maintainer", "bob": "operator", "carol": "viewer"}


def test_a_maintainer_adds_promotes_and_removes_members(api_for, personas):
    client = api_for("alice")
    assert client.post(MEMBERS, {"username": "mallory", "role": "viewer"}).status_code == 201
    assert client.post(MEMBERS, {"username": "mallory"}).status_code == 409
    response = client.client.patch(f"{MEMBERS}/mallory", {"role": "operator"},
                                   content_type="application/json", headers=client.headers)
    assert response.json()["role"] == "operator"
    response = client.client.delete(f"{MEMBERS}/mallory", headers=client.headers)
    assert response.status_code == 204
    assert not Membership.objects.filter(user=personas["mallory"]).exists()
    actions = set(AuditLog.objects.values_list("action", flat=True))
    assert {"membership.create", "membership.update", "membership.delete"} <= actions


def test_the_last_maintainer_cannot_leave(api_for):
    client = api_for("alice")
    response = client.client.delete(f"{MEMBERS}/alice", headers=client.headers)
    assert response.status_code == 409
    assert "at least one maintainer" in response.json()["error"]["message"]


@pytest.mark.parametrize(("who", "status"), [("bob", 403), ("carol", 403), ("mallory", 404)])
def test_only_maintainers_manage_members(api_for, who, status):
    assert api_for(who).post(MEMBERS, {"username": "carol"}).status_code == status


def test_unknown_user_or_role_is_422(api_for):
    client = api_for("alice")
    assert client.post(MEMBERS, {"username": "ghost"}).status_code == 422
    assert client.post(MEMBERS, {"username": "mallory", "role": "god"}).status_code == 422


def test_a_maintainer_creates_a_valid_task_and_it_is_audited(api_for):
    body = {"slug": "ping", "name": "Ping", "spec": {"argv": ["echo", "{{ host }}"]},
            "params_schema": [{"name": "host", "type": "string", "required": True}],
            "max_attempts": 3, "retry_backoff": [5, 10]}
    response = api_for("alice").post(TASKS, body)
    assert response.status_code == 201, response.content
    assert response.json()["max_attempts"] == 3
    assert Task.objects.filter(slug="ping").exists()
    assert AuditLog.objects.filter(action="task.create").exists()
    listed = api_for("carol").get(TASKS).json()["items"]
    assert [t["slug"] for t in listed] == ["ping"]


def test_an_invalid_task_definition_names_the_field(api_for):
    body = {"slug": "bad", "name": "Bad", "spec": {"argv": ["echo", "{{ nope }}"]}}
    response = api_for("alice").post(TASKS, body)
    assert response.status_code == 422
    fields = response.json()["error"]["fields"]
    assert any("spec.argv[1]" in m for m in fields["spec"])
    assert not Task.objects.filter(slug="bad").exists()


def test_an_invalid_pipeline_spec_names_the_field(api_for):
    body = {"slug": "p", "name": "P", "kind": "pipeline",
            "spec": {"stages": [{"name": "a", "steps": [{"name": "s", "command": ["true"]}],
                                 "on_failure": {"goto": "zzz"}}]}}
    response = api_for("alice").post(TASKS, body)
    assert response.status_code == 422
    assert any("spec.stages[0].on_failure.goto" in m
               for m in response.json()["error"]["fields"]["spec"])


def test_update_and_delete_tasks(api_for, hello_task):
    client = api_for("alice")
    response = client.client.patch(f"{TASKS}/hello", {"enabled": False},
                                   content_type="application/json", headers=client.headers)
    assert response.status_code == 200 and response.json()["enabled"] is False
    response = client.client.patch(f"{TASKS}/hello", {"timeout_seconds": 0},
                                   content_type="application/json", headers=client.headers)
    assert response.status_code == 422
    assert client.client.delete(f"{TASKS}/hello", headers=client.headers).status_code == 204


def test_a_task_with_runs_cannot_be_deleted(api_for, hello_task):
    api_for("bob").post(f"{TASKS}/hello/runs", {"params": {"name": "x"}})
    client = api_for("alice")
    response = client.client.delete(f"{TASKS}/hello", headers=client.headers)
    assert response.status_code == 409
    assert "disable it" in response.json()["error"]["message"]


@pytest.mark.parametrize(("who", "status"), [("bob", 403), ("carol", 403), ("mallory", 404)])
def test_only_maintainers_write_tasks(api_for, who, status):
    body = {"slug": "x", "name": "X", "spec": {"argv": ["true"]}}
    assert api_for(who).post(TASKS, body).status_code == status


def test_tokens_are_created_once_listed_without_secret_and_revoked(api_for, personas):
    client = api_for("bob")
    created = client.post("/api/tokens", {"name": "ci", "expires_in_days": 30})
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("sy_")
    listed = client.get("/api/tokens").json()["items"]
    assert all("token" not in t for t in listed)
    assert token not in str(listed)
    from tests.conftest import ApiClient

    new_client = ApiClient(token)
    assert new_client.get("/api/runs").status_code == 200
    token_id = created.json()["id"]
    assert client.client.delete(f"/api/tokens/{token_id}", headers=client.headers
                                ).status_code == 204
    assert new_client.get("/api/runs").status_code == 401
    assert ApiToken.objects.get(pk=token_id).revoked_at is not None
    # Someone else's token is not found.
    other = api_for("carol")
    assert other.client.delete(f"/api/tokens/{token_id}", headers=other.headers
                               ).status_code == 404


def test_runs_filter_by_date_range(api_for, hello_task):
    api_for("bob").post(f"{TASKS}/hello/runs", {"params": {"name": "x"}})
    client = api_for("carol")
    assert len(client.get("/api/runs?created_after=2000-01-01T00:00:00Z").json()["items"]) == 1
    assert client.get("/api/runs?created_before=2000-01-01T00:00:00Z").json()["items"] == []
    assert client.get("/api/runs?created_after=yesterday").status_code == 422
