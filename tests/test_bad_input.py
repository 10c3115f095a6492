"""Input no database can store gets a 400 saying why, never a 500 (PostgreSQL rejects NUL
characters and lone surrogates in text)."""

from __future__ import annotations

import pytest

from runs.services import run_launch
from runs.transitions import Actor


@pytest.mark.parametrize("path", [
    "/api/projects/a%00b/tasks",
    "/api/runs?project=%00",
    "/api/runs?task=x%00y",
    "/api/runs?created_by=%00",
    "/runs/?project=%00",
    "/p/a%00b/",
])
def test_nul_in_path_or_query_is_400(api_for, client, personas, path):
    client.force_login(personas["bob"])
    for response in (api_for("bob").get(path), client.get(path)):
        assert response.status_code == 400
        assert b"NUL" in response.content


def test_nul_in_a_header_is_400(api_for, hello_task):
    response = api_for("bob").post("/api/projects/demo/tasks/hello/runs",
                                   {"params": {"name": "x"}},
                                   headers={"Idempotency-Key": "a\x00b"})
    assert response.status_code == 400


@pytest.mark.parametrize("body", [{"reason": "a\x00b"}, {"reason": "\ud800"}])
def test_unstorable_control_reasons_are_422(api_for, hello_task, body):
    run, _ = run_launch(task=hello_task, raw_params={"name": "x"},
                        actor=Actor(via="api", label="bob"))
    response = api_for("bob").post(f"/api/runs/{run.pk}/cancel", body)
    assert response.status_code == 422


def test_a_lone_surrogate_parameter_is_422(api_for, hello_task):
    response = api_for("bob").post("/api/projects/demo/tasks/hello/runs",
                                   {"params": {"name": "\ud800"}})
    assert response.status_code == 422


def test_a_huge_number_is_422(api_for, project):
    from tests.factories import TaskFactory

    TaskFactory(project=project, slug="num", spec={"argv": ["true"]},
                params_schema=[{"name": "x", "type": "number"}])
    response = api_for("bob").post("/api/projects/demo/tasks/num/runs",
                                   {"params": {"x": 10**400}})
    assert response.status_code == 422
    assert "finite" in response.json()["error"]["fields"]["x"][0]


def test_workers_status_counts_only_my_projects(api_for, hello_task):
    run_launch(task=hello_task, raw_params={"name": "x"}, actor=Actor(via="api", label="b"))
    assert api_for("bob").get("/api/workers").json()["pending"] == 1
    assert api_for("mallory").get("/api/workers").json()["pending"] == 0
