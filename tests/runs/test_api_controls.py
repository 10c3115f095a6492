"""Run controls through the API: roles, outsiders, state errors, audit."""

from __future__ import annotations

import pytest

from runs.models import AuditLog, Run, RunStatus
from runs.services import run_launch
from runs.transitions import Actor


@pytest.fixture
def run(hello_task):
    return run_launch(task=hello_task, raw_params={"name": "x"},
                      actor=Actor(via="api", label="bob"))[0]


def test_an_operator_cancels_with_a_reason(api_for, run, personas):
    response = api_for("bob").post(f"/api/runs/{run.pk}/cancel", {"reason": "oops"})
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert AuditLog.objects.filter(action="run.cancel", actor=personas["bob"],
                                   changes__reason="oops").exists()


def test_cancel_twice_is_a_409_saying_why(api_for, run):
    client = api_for("bob")
    client.post(f"/api/runs/{run.pk}/cancel")
    again = client.post(f"/api/runs/{run.pk}/cancel")
    assert again.status_code == 409
    assert "already ended" in again.json()["error"]["message"]


def test_pause_and_resume(api_for, run):
    client = api_for("bob")
    assert client.post(f"/api/runs/{run.pk}/pause").json()["status"] == "paused"
    assert client.post(f"/api/runs/{run.pk}/pause").status_code == 409
    assert client.post(f"/api/runs/{run.pk}/resume").json()["status"] == "queued"


def test_cancel_one_execution(api_for, run):
    execution = run.executions.get()
    response = api_for("bob").post(f"/api/executions/{execution.pk}/cancel")
    assert response.status_code == 200
    assert response.json()["executions"][0]["status"] == "cancelled"


@pytest.mark.parametrize("action", ["cancel", "pause", "resume"])
def test_a_viewer_gets_403_and_an_outsider_404(api_for, run, action):
    assert api_for("carol").post(f"/api/runs/{run.pk}/{action}").status_code == 403
    assert api_for("mallory").post(f"/api/runs/{run.pk}/{action}").status_code == 404
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_an_overlong_reason_is_422(api_for, run):
    response = api_for("bob").post(f"/api/runs/{run.pk}/cancel", {"reason": "x" * 301})
    assert response.status_code == 422


def test_a_maximal_reason_with_a_long_username_is_stored_cut_not_a_500(api_for, run,
                                                                       personas):
    personas["bob"].username = "b" * 150
    personas["bob"].save()
    response = api_for("bob").post(f"/api/runs/{run.pk}/cancel", {"reason": "r" * 300})
    assert response.status_code == 200
    execution = run.executions.get()
    assert len(execution.cancel_reason) <= 300
    assert execution.cancel_reason.endswith("…")
