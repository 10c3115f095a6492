"""The REST API: launch, lists, events, logs, auth, visibility and the error shape."""

from __future__ import annotations

import pytest

from runs.models import ApiToken, AuditLog, Event, LogChunk, Run
from runs.services import run_launch
from runs.transitions import Actor, event_append

LAUNCH = "/api/projects/demo/tasks/hello/runs"


def _error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "fields"} <= set(body["error"])
    return body["error"]


def test_it_launches_a_run_with_201_and_its_executions(api_for, hello_task):
    response = api_for("bob").post(LAUNCH, {"params": {"name": "Ada", "count": 2}})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued"
    assert body["task"] == "hello"
    assert body["params"] == {"name": "Ada", "count": 2}
    assert body["trigger"] == "api"
    assert body["created_by"] == "bob"
    assert len(body["executions"]) == 1
    run = Run.objects.get(pk=body["id"])
    assert AuditLog.objects.filter(action="run.launch", object_id=str(run.pk), via="api",
                                   actor__username="bob").exists()


def test_defaults_fill_missing_optional_params(api_for, hello_task):
    body = api_for("bob").post(LAUNCH, {"params": {"name": "Ada"}}).json()
    assert body["params"] == {"name": "Ada", "count": 1}


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({}, "name", "required"),
        ({"name": 5}, "name", "must be a string"),
        ({"name": "Ada", "count": "three"}, "count", "whole number"),
        ({"name": "Ada", "count": 11}, "count", "at most 10"),
        ({"name": "x" * 51}, "name", "at most 50"),
        ({"name": "Ada", "colour": "red"}, "colour", "unknown parameter"),
    ],
)
def test_bad_params_get_422_with_errors_per_field(api_for, hello_task, params, field, fragment):
    response = api_for("bob").post(LAUNCH, {"params": params})
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "invalid"
    assert any(fragment in message for message in error["fields"][field]), error
    assert not Run.objects.exists()


def test_params_must_be_an_object(api_for, hello_task):
    response = api_for("bob").post(LAUNCH, {"params": ["Ada"]})
    assert response.status_code == 422
    assert "params" in _error(response)["fields"]


@pytest.mark.parametrize("raw", ["{not json", "", "null", "[1, 2]", '{"params": '])
def test_malformed_json_is_a_4xx_with_a_message(api_for, hello_task, raw):
    response = api_for("bob").post(LAUNCH, raw=raw)
    assert 400 <= response.status_code < 500
    assert _error(response)["message"]


def test_unknown_project_or_task_is_404(api_for, hello_task):
    client = api_for("bob")
    assert client.post("/api/projects/demo/tasks/nope/runs", {"params": {}}).status_code == 404
    assert client.post("/api/projects/nope/tasks/hello/runs", {"params": {}}).status_code == 404


def test_a_viewer_cannot_launch(api_for, hello_task):
    response = api_for("carol").post(LAUNCH, {"params": {"name": "Ada"}})
    assert response.status_code == 403
    assert "operator" in _error(response)["message"]


def test_an_outsider_gets_404_for_everything_of_the_project(api_for, hello_task, personas):
    run, _ = run_launch(task=hello_task, raw_params={"name": "x"},
                        actor=Actor(user=personas["bob"], via="api", label="bob"))
    execution = run.executions.get()
    client = api_for("mallory")
    assert client.post(LAUNCH, {"params": {"name": "x"}}).status_code == 404
    assert client.get(f"/api/runs/{run.pk}").status_code == 404
    assert client.get(f"/api/runs/{run.pk}/events").status_code == 404
    assert client.get(f"/api/executions/{execution.pk}/logs").status_code == 404
    assert client.get("/api/projects/demo/tasks").status_code == 404
    assert client.get("/api/projects/demo").status_code == 404
    assert client.get("/api/projects/demo/members").status_code == 404
    assert client.get("/api/runs").json()["items"] == []
    assert client.get("/api/runs?project=demo").json()["items"] == []


def test_no_or_bad_or_revoked_token_is_401(api_for, personas, hello_task):
    assert api_for(None).get("/api/runs").status_code == 401
    from tests.conftest import ApiClient

    assert ApiClient("sy_00000000_wrong").get("/api/runs").status_code == 401
    client = api_for("bob")
    assert client.get("/api/runs").status_code == 200
    ApiToken.objects.update(revoked_at="2026-01-01T00:00:00Z")
    response = client.get("/api/runs")
    assert response.status_code == 401
    assert _error(response)["code"] == "unauthenticated"


def test_tokens_are_stored_hashed(api_for):
    client = api_for("bob")
    token = client.headers["Authorization"].removeprefix("Bearer ")
    row = ApiToken.objects.get()
    assert token not in (row.token_hash, row.prefix)
    assert row.prefix in token


def test_run_list_paginates_by_cursor_and_filters(api_for, hello_task, personas):
    actor = Actor(user=personas["bob"], via="api", label="bob")
    ids = [run_launch(task=hello_task, raw_params={"name": str(i)}, actor=actor)[0].pk
           for i in range(5)]
    client = api_for("carol")
    first = client.get("/api/runs?limit=2").json()
    assert [r["id"] for r in first["items"]] == ids[::-1][:2]
    second = client.get(f"/api/runs?limit=2&cursor={first['next_cursor']}").json()
    assert [r["id"] for r in second["items"]] == ids[::-1][2:4]
    third = client.get(f"/api/runs?limit=2&cursor={second['next_cursor']}").json()
    assert [r["id"] for r in third["items"]] == ids[:1]
    assert third["next_cursor"] is None
    assert len(client.get("/api/runs?status=queued&task=hello").json()["items"]) == 5
    assert client.get("/api/runs?status=succeeded").json()["items"] == []


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "aWQ6LTE", "eHk6MTA"])
def test_a_bad_cursor_is_400_with_a_message(api_for, hello_task, cursor):
    response = api_for("carol").get(f"/api/runs?cursor={cursor}")
    assert response.status_code == 400
    assert "cursor" in _error(response)["message"]


@pytest.mark.parametrize("query", ["status=bogus", "trigger=nope", "limit=0", "limit=abc",
                                   "limit=100000"])
def test_bad_filters_are_4xx(api_for, hello_task, query):
    response = api_for("carol").get(f"/api/runs?{query}")
    assert response.status_code in (400, 422)
    _error(response)


def test_events_and_logs_after_a_cursor(api_for, hello_task, personas):
    from django.utils import timezone

    run, _ = run_launch(task=hello_task, raw_params={"name": "x"},
                        actor=Actor(user=personas["bob"], via="api", label="bob"))
    for n in range(3):
        event_append(run.pk, "test.note", f"note {n}", now=timezone.now())
    execution = run.executions.get()
    for seq in range(1, 4):
        LogChunk.objects.create(execution=execution, attempt=1, seq=seq, stream="stdout",
                                text=f"line {seq}", line_count=1, created_at=timezone.now())
    client = api_for("carol")
    events = client.get(f"/api/runs/{run.pk}/events?after=1").json()
    assert [e["seq"] for e in events["items"]] == [2, 3, 4]
    assert events["next_after"] == 4
    assert events["run_finished"] is False
    again = client.get(f"/api/runs/{run.pk}/events?after={events['next_after']}").json()
    assert again["items"] == []
    logs = client.get(f"/api/executions/{execution.pk}/logs?after=1").json()
    assert [c["text"] for c in logs["items"]] == ["line 2", "line 3"]
    assert client.get(f"/api/runs/{run.pk}/events?after=-1").status_code == 422
    assert client.get(f"/api/runs/{run.pk}/events?after=x").status_code == 422
    assert Event.objects.filter(run=run).count() == 4


def test_unknown_run_and_execution_ids_are_404(api_for, hello_task):
    client = api_for("carol")
    assert client.get("/api/runs/999999").status_code == 404
    assert client.get("/api/runs/abc").status_code == 404
    assert client.get("/api/executions/999999/logs").status_code == 404


def test_idempotency_key_returns_the_same_run_and_409_for_another_body(api_for, hello_task):
    client = api_for("bob")
    headers = {"Idempotency-Key": "deploy-42"}
    first = client.post(LAUNCH, {"params": {"name": "Ada"}}, headers=headers)
    again = client.post(LAUNCH, {"params": {"name": "Ada"}}, headers=headers)
    other = client.post(LAUNCH, {"params": {"name": "Bob"}}, headers=headers)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409
    assert Run.objects.count() == 1


def test_openapi_and_docs_are_served(client):
    spec = client.get("/api/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert "/api/projects/{project}/tasks/{task}/runs" in paths
    assert "/api/runs/{run_id}/events" in paths
    assert client.get("/api/docs").status_code == 200


def test_a_nul_character_in_a_parameter_is_a_field_error(api_for, hello_task):
    response = api_for("bob").post(LAUNCH, {"params": {"name": "a\x00b"}})
    assert response.status_code == 422
    assert "NUL" in _error(response)["fields"]["name"][0]


def test_a_cursor_beyond_bigint_is_400(api_for, hello_task):
    import base64

    cursor = base64.urlsafe_b64encode(b"id:99999999999999999999").decode().rstrip("=")
    assert api_for("carol").get(f"/api/runs?cursor={cursor}").status_code == 400


@pytest.mark.parametrize(("run_id", "status"), [("99999999999999999999", 404), ("0", 422),
                                                ("-1", 404), ("abc", 404)])
def test_odd_run_ids_are_a_json_4xx(api_for, hello_task, run_id, status):
    response = api_for("carol").get(f"/api/runs/{run_id}")
    assert response.status_code == status
    _error(response)


def test_projects_list_has_no_query_per_project(api_for, personas, django_assert_max_num_queries):
    from tests.factories import MembershipFactory, ProjectFactory

    for n in range(5):
        MembershipFactory(project=ProjectFactory(slug=f"p{n}"), user=personas["bob"])
    client = api_for("bob")
    with django_assert_max_num_queries(6):
        body = client.get("/api/projects").json()["items"]
    assert {p["slug"]: p["role"] for p in body}["demo"] == "operator"
    assert len(body) == 6


def test_a_date_filter_with_any_offset_is_answered(api_for, hello_task, personas):
    # Python accepts offsets up to ±23:59, PostgreSQL up to ±15:59: found by the fuzzer.
    api = api_for("carol")
    for value in ("0321-04-20T06:15:35+16:32", "2026-01-01T00:00:00-23:59",
                  "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"):
        response = api.get("/api/runs", data={"created_after": value})
        assert response.status_code == 200, (value, response.content)
        response = api.get("/api/runs", data={"created_before": value})
        assert response.status_code == 200, (value, response.content)
