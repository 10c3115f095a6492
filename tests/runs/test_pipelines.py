"""Pipelines end to end with real commands: loop-back, matrix fan-out, approvals, re-run of
failed executions only, and spec validation naming the field."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from jobs.dispatch import dispatch
from jobs.reaper import reap
from jobs.tasks import execution_run
from runs.demo import DEMO_PIPELINES
from runs.models import Attempt, AuditLog, Event, Execution, Run, RunStatus, Task
from runs.services import run_launch, run_rerun
from runs.transitions import Actor
from tests.factories import TaskFactory

BOB = Actor(via="api", label="bob")


def drive(run: Run, *, limit: int = 100) -> Run:
    """Run a pipeline in this process: dispatch, execute what is queued, until nothing moves."""
    for _ in range(limit):
        dispatch()
        queued = list(Execution.objects.filter(run=run, status="queued").values_list(
            "pk", flat=True))
        if not queued:
            break
        for pk in queued:
            execution_run(pk)
    run.refresh_from_db()
    return run


def demo(project, slug: str) -> Task:
    definition = next(d for d in DEMO_PIPELINES if d["slug"] == slug)
    task = Task(project=project, **definition)
    task.full_clean()
    task.save()
    return task


def launch(task, **params) -> Run:
    return run_launch(task=task, raw_params=params, actor=BOB)[0]


def test_the_agent_pipeline_loops_back_once_when_qa_fails_once(project):
    run = drive(launch(demo(project, "agent-pipeline"), qa_fails="once"))
    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    rows = list(run.executions.order_by("position").values_list("stage", "iteration",
                                                                 "status"))
    assert rows == [("dev", 1, "succeeded"), ("qa", 1, "failed"), ("dev", 2, "succeeded"),
                    ("qa", 2, "succeeded"), ("sec", 2, "succeeded"), ("docs", 2, "succeeded")]
    loop = Event.objects.get(run=run, kind="pipeline.loop_back")
    assert "looping back to dev (loop 1 of 2)" in loop.message
    # DEV's second iteration received QA's findings as input.
    dev2 = run.executions.get(stage="dev", iteration=2)
    assert dev2.input["loop"]["from_stage"] == "qa"
    assert "test_checkout fails" in dev2.input["loop"]["failed"][0]["error"]
    text = "\n".join(dev2.log_chunks.values_list("text", flat=True))
    assert "fixing findings from qa" in text
    assert run.pipeline_state["loops"] == {"qa": 1}


def test_the_agent_pipeline_fails_when_qa_always_fails(project):
    run = drive(launch(demo(project, "agent-pipeline"), qa_fails="always"))
    assert run.status == RunStatus.FAILED
    assert "stage qa failed" in run.status_reason
    assert "exhausted max_loops (2)" in run.status_reason
    assert run.executions.filter(stage="qa").count() == 3  # first try + 2 loops


def test_a_3_by_2_matrix_runs_6_executions_each_with_its_parameters(project):
    run = launch(demo(project, "visual-batch"))
    executions = list(run.executions.all())
    assert len(executions) == 6
    assert {(e.matrix["page"], e.matrix["viewport"]) for e in executions} == {
        (p, v) for p in ("home", "pricing", "docs") for v in ("desktop", "phone")}
    dispatch()
    assert run.executions.filter(status="queued").count() == 2  # max_parallel
    waiting = run.executions.filter(status="pending").first()
    assert "max_parallel" in waiting.waiting_reason
    run = drive(run)
    assert run.status == RunStatus.SUCCEEDED, [
        (e.matrix, e.error) for e in run.executions.exclude(status="succeeded")]
    for e in run.executions.all():
        # Each cell saw its own page and viewport, and the run's parameter.
        assert e.result == {**e.matrix, "change": "none"}


def test_progress_counts_per_stage(project):
    from runs.selectors import executions_for_run, run_progress

    run = drive(launch(demo(project, "agent-pipeline"), qa_fails="never"))
    progress = run_progress(run, executions_for_run(run))
    assert (progress["done"], progress["total"], progress["percent"]) == (4, 4, 100)
    assert [s["name"] for s in progress["stages"]] == ["dev", "qa", "sec", "docs"]
    assert all(s["status"] == "succeeded" for s in progress["stages"])


def test_an_approval_waits_until_an_operator_approves(project, personas, api_for):
    run = drive(launch(demo(project, "deploy"), version="2.0.0"))
    assert run.status == RunStatus.WAITING
    gate = run.executions.get(status="waiting_approval")
    assert gate.stage == "production"
    body = api_for("carol").get(f"/api/runs/{run.pk}").json()
    assert body["status"] == "waiting"
    # A viewer may not approve; an outsider does not see it.
    assert api_for("carol").post(f"/api/executions/{gate.pk}/approve").status_code == 403
    assert api_for("mallory").post(f"/api/executions/{gate.pk}/approve").status_code == 404
    response = api_for("bob").post(f"/api/executions/{gate.pk}/approve",
                                   {"comment": "ship it"})
    assert response.status_code == 200
    run = drive(run)
    assert run.status == RunStatus.SUCCEEDED
    ship = run.executions.get(step="ship")
    assert "deploying 2.0.0 to production" in "\n".join(
        ship.log_chunks.values_list("text", flat=True))
    audit = AuditLog.objects.get(action="approval.grant")
    assert audit.actor == personas["bob"] and audit.changes["comment"] == "ship it"
    assert Event.objects.filter(run=run, kind="approval.granted").exists()


def test_a_rejection_fails_the_run_and_is_audited(project, personas, api_for):
    run = drive(launch(demo(project, "deploy")))
    gate = run.executions.get(status="waiting_approval")
    api_for("bob").post(f"/api/executions/{gate.pk}/reject", {"comment": "not today"})
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "production rejected by bob: not today" in run.status_reason
    assert AuditLog.objects.filter(action="approval.reject", actor=personas["bob"]).exists()
    assert not run.executions.filter(step="ship").exists()


def test_an_approval_timeout_resolves_as_the_stage_says(project):
    run = drive(launch(demo(project, "deploy")))
    gate = run.executions.get(status="waiting_approval")
    assert reap(now=gate.not_before - timedelta(seconds=1)).approvals_expired == 0
    assert reap(now=gate.not_before + timedelta(seconds=1)).approvals_expired == 1
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "no decision before the approval timeout" in run.status_reason


def _flaky_matrix(project) -> Task:
    return TaskFactory(
        project=project, kind="pipeline", params_schema=[],
        spec={"stages": [
            {"name": "prepare", "steps": [{"name": "setup", "command": ["true"]}]},
            {"name": "check", "matrix": {"page": ["a", "b", "c"], "size": ["s", "m"]},
             "steps": [{"name": "probe", "command": [
                 "python3", "-c", "import sys; sys.exit(1 if sys.argv[1] == 'b' else 0)",
                 "{{ page }}"]}]},
            {"name": "report", "steps": [{"name": "sum", "command": ["true"]}]},
        ]},
    )


def test_rerun_failed_only_executes_exactly_the_failed_executions(project):
    old = drive(launch(_flaky_matrix(project)))
    assert old.status == RunStatus.FAILED
    failed = {e.name for e in old.executions.filter(status="failed")}
    assert failed == {"check/probe[page=b, size=s]", "check/probe[page=b, size=m]"}

    new = run_rerun(run=old, mode="failed", actor=BOB)
    assert new.rerun_of == old and new.trigger == "rerun"
    pending = {e.name for e in new.executions.filter(status="pending")}
    assert pending == failed
    reused = new.executions.filter(reused_from__isnull=False)
    assert reused.count() == 5  # setup + the 4 good cells
    new = drive(new)
    ran = set(Attempt.objects.filter(execution__run=new).values_list("execution__name",
                                                                     flat=True))
    assert ran == failed  # nothing else ran again


def test_rerun_all_runs_everything_again(project):
    old = drive(launch(_flaky_matrix(project)))
    new = drive(run_rerun(run=old, mode="all", actor=BOB))
    assert Attempt.objects.filter(execution__run=new).count() == 7  # setup + 6 cells


def test_a_succeeded_run_has_nothing_to_rerun_failed_only(project, hello_task):
    from runs.errors import TransitionNotAllowed

    run = drive(launch(hello_task, name="x"))
    with pytest.raises(TransitionNotAllowed, match="nothing failed"):
        run_rerun(run=run, mode="failed", actor=BOB)


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"stages": []}, "spec.stages"),
        ({"stages": [{"name": "a"}]}, "spec.stages[0].steps"),
        ({"stages": [{"name": "a", "steps": [{"name": "s"}]}]}, "spec.stages[0].steps[0]"),
        ({"stages": [{"name": "a", "steps": [{"name": "s", "task": "nope"}]}]},
         "spec.stages[0].steps[0].task"),
        ({"stages": [{"name": "a", "steps": [{"name": "s", "command": ["true"]}],
                      "on_failure": {"goto": "b"}},
                     {"name": "b", "steps": [{"name": "s", "command": ["true"]}]}]},
         "spec.stages[0].on_failure.goto"),
        ({"stages": [{"name": "a", "steps": [{"name": "s", "command": ["true"]}],
                      "on_failure": {"goto": "a", "max_loops": 50}}]},
         "spec.stages[0].on_failure.max_loops"),
        ({"stages": [{"name": "a", "matrix": {"x": []},
                      "steps": [{"name": "s", "command": ["true"]}]}]},
         "spec.stages[0].matrix.x"),
        ({"stages": [{"name": "a", "approval": {"role": "viewer"},
                      "steps": [{"name": "s", "command": ["true"]}]}]},
         "spec.stages[0].approval.role"),
        ({"stages": [{"name": "a", "steps": [{"name": "s", "command": ["echo",
                                                                       "{{ nope }}"]}]}]},
         "spec.stages[0].steps[0].command[1]"),
        ({"stages": [{"name": "a", "max_parallel": 0,
                      "steps": [{"name": "s", "command": ["true"]}]}]},
         "spec.stages[0].max_parallel"),
    ],
)
def test_an_invalid_spec_is_refused_naming_the_field(project, spec, where):
    task = TaskFactory.build(project=project, kind="pipeline", spec=spec, params_schema=[])
    with pytest.raises(ValidationError) as info:
        task.full_clean()
    assert any(m.startswith(where + ":") for m in info.value.message_dict["spec"]), \
        info.value.message_dict


def test_a_step_can_reference_another_task_with_parameters(project, hello_task):
    task = TaskFactory(
        project=project, kind="pipeline",
        params_schema=[{"name": "who", "type": "string"}],
        spec={"stages": [{"name": "greet", "steps": [
            {"name": "hi", "task": "hello", "params": {"name": "{{ who }} the great"}}]}]},
    )
    task.full_clean()
    run = drive(launch(task, who="Ada"))
    assert run.status == RunStatus.SUCCEEDED
    text = "\n".join(run.executions.get().log_chunks.values_list("text", flat=True))
    assert "Hello, Ada the great!" in text


def test_a_step_whose_parameters_do_not_fit_its_task_fails_clearly(project, hello_task):
    task = TaskFactory(
        project=project, kind="pipeline", params_schema=[],
        spec={"stages": [{"name": "greet", "steps": [
            {"name": "hi", "task": "hello", "params": {"name": "x", "count": "many"}}]}]},
    )
    run = drive(launch(task))
    assert run.status == RunStatus.FAILED
    assert "count" in run.executions.get().error


def test_cancel_of_a_waiting_pipeline_ends_it(project):
    from runs.transitions import run_cancel

    run = drive(launch(demo(project, "deploy")))
    run_cancel(run_id=run.pk, actor=BOB)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert run.finished_at <= timezone.now()


def test_rerun_failed_only_of_an_exhausted_loop_gets_a_fresh_loop_budget(project):
    old = drive(launch(demo(project, "agent-pipeline"), qa_fails="always"))
    assert "exhausted max_loops" in old.status_reason
    new = drive(run_rerun(run=old, mode="failed", actor=BOB))
    assert new.pipeline_state["loops"] == {"qa": 2}  # it looped again before failing
    assert new.executions.filter(stage="qa", reused_from__isnull=True).count() == 3
