"""The staff back office: run and execution controls as admin actions (cancel, pause, resume,
re-run; approve and reject a pipeline stage), and history that nobody adds to, changes or
deletes, superusers included.

The actions are driven the way a browser drives them: a POST of the changelist form with
`action` and `_selected_action`.
"""

from __future__ import annotations

import html
import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from runs.models import AuditLog, Event, Execution, ExecutionStatus, Run, RunStatus, Trigger
from runs.services import run_launch
from runs.transitions import SYSTEM, Actor, execution_claim, execution_queue, run_cancel
from tests.factories import UserFactory
from tests.runs.test_pipeline_pages import flaky_matrix
from tests.runs.test_pipelines import demo, drive
from tests.runs.test_pipelines import launch as pipeline_launch

pytestmark = pytest.mark.django_db

RUNS = "/admin/runs/run/"
EXECUTIONS = "/admin/runs/execution/"


@pytest.fixture
def root() -> Client:
    """A staff superuser, logged in."""
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def launch(hello_task, personas):
    def make() -> Run:
        run, _ = run_launch(task=hello_task, raw_params={"name": "Ada"},
                            actor=Actor(user=personas["bob"], via="ui", label="bob"),
                            trigger=Trigger.UI)
        return run

    return make


def start(run: Run) -> Execution:
    execution = run.executions.get()
    assert execution_queue(execution_id=execution.pk)
    assert execution_claim(execution_id=execution.pk, worker="test-worker") is not None
    return execution


def act(client: Client, changelist: str, action: str, ids: list[int]) -> list[tuple[str, str]]:
    """Run an admin action on `ids` and return the (level, text) messages shown after it."""
    response = client.post(changelist, {"action": action, "_selected_action": ids},
                           headers={"User-Agent": "admin-browser"})
    assert response.status_code == 302, response.content[:500]
    page = client.get(response["Location"]).content.decode()
    listed = re.search(r'<ul class="messagelist">(.*?)</ul>', page, re.S)
    return [(level, html.unescape(text)) for level, text in
            re.findall(r'<li class="(\w+)">(.*?)</li>', listed.group(1) if listed else "", re.S)]


def status_of(run: Run) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run.pk)


def admin_audits(action: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(action=action, via="admin").order_by("object_id"))


# --- run actions -------------------------------------------------------------------------------


def test_the_run_changelist_offers_the_controls(root, launch):
    launch()
    page = root.get(RUNS).content.decode()
    for value, label in [("cancel_runs", "Cancel selected runs"),
                         ("pause_runs", "Pause selected runs"),
                         ("resume_runs", "Resume selected runs")]:
        assert f'<option value="{value}">{label}</option>' in page


def test_cancel_selected_runs_reports_each_success_and_refusal(root, launch):
    first, second, ended = launch(), launch(), launch()
    run_cancel(run_id=ended.pk, actor=SYSTEM)
    shown = act(root, RUNS, "cancel_runs", [first.pk, second.pk, ended.pk])
    assert ("success", f"Cancelled 2 runs: Run #{first.pk}, Run #{second.pk}.") in shown
    assert ("warning", f"Run #{ended.pk} not cancelled: Run {ended.pk} has already ended "
            "(cancelled); nothing to cancel.") in shown
    assert [status_of(r) for r in (first, second, ended)] == [RunStatus.CANCELLED] * 3
    audits = admin_audits("run.cancel")
    assert [a.object_id for a in audits] == [str(first.pk), str(second.pk)]
    for audit in audits:
        assert (audit.actor_label, audit.actor.username) == ("root", "root")
        assert audit.ip_address == "127.0.0.1" and audit.user_agent == "admin-browser"


def test_cancelling_a_running_run_from_the_admin_asks_it_to_stop(root, launch):
    run = launch()
    execution = start(run)
    shown = act(root, RUNS, "cancel_runs", [run.pk])
    assert ("success", f"Stop requested for 1 run still running: Run #{run.pk}. It ends "
            "cancelled once the processes have stopped.") in shown
    execution.refresh_from_db()
    assert execution.cancel_requested_at is not None
    assert status_of(run) == RunStatus.RUNNING
    assert len(admin_audits("run.cancel")) == 1


def test_pause_and_resume_selected_runs(root, launch):
    run, other = launch(), launch()
    shown = act(root, RUNS, "pause_runs", [run.pk, other.pk])
    assert ("success", f"Paused 2 runs: Run #{run.pk}, Run #{other.pk}.") in shown
    assert status_of(run) == status_of(other) == RunStatus.PAUSED
    assert len(admin_audits("run.paused")) == 2

    shown = act(root, RUNS, "pause_runs", [run.pk])
    [(level, text)] = shown
    assert level == "warning" and text.startswith(f"Run #{run.pk} not paused: A run cannot go "
                                                  "from 'paused' to")

    shown = act(root, RUNS, "resume_runs", [run.pk])
    assert shown == [("success", f"Resumed 1 run: Run #{run.pk}.")]
    assert status_of(run) == RunStatus.QUEUED
    assert [a.object_id for a in admin_audits("run.queued")] == [str(run.pk)]


def test_resuming_a_run_that_is_not_paused_is_a_warning(root, launch):
    run = launch()
    shown = act(root, RUNS, "resume_runs", [run.pk])
    assert shown == [("warning", f"Run #{run.pk} not resumed: Run {run.pk} is queued, not "
                      "paused.")]
    assert status_of(run) == RunStatus.QUEUED
    assert not AuditLog.objects.filter(via="admin").exists()


def test_many_refusals_are_summed_up(root, launch, monkeypatch):
    monkeypatch.setattr("runs.admin_actions.MAX_REFUSALS_LISTED", 2)
    runs = [launch() for _ in range(4)]
    shown = act(root, RUNS, "resume_runs", [r.pk for r in runs])
    assert [level for level, _ in shown] == ["warning"] * 3
    assert shown[-1][1].startswith("2 more were refused")


def test_a_staff_member_without_change_permission_gets_no_controls(launch):
    run = launch()
    viewer = UserFactory(username="auditor", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_run"))
    client = Client()
    client.force_login(viewer)
    page = client.get(RUNS).content.decode()
    assert "cancel_runs" not in page
    client.post(RUNS, {"action": "cancel_runs", "_selected_action": [run.pk]})
    assert status_of(run) == RunStatus.QUEUED


# --- execution action --------------------------------------------------------------------------


def test_cancel_selected_executions(root, launch):
    waiting, running, ended = launch(), launch(), launch()
    running_execution = start(running)
    run_cancel(run_id=ended.pk, actor=SYSTEM)
    ids = [r.executions.get().pk for r in (waiting, running, ended)]
    shown = act(root, EXECUTIONS, "cancel_executions", ids)
    name = running_execution.name
    assert ("success", f"Cancelled 1 execution: Execution #{ids[0]} ({name}) of run "
            f"#{waiting.pk}.") in shown
    assert ("success", f"Stop requested for 1 execution still running: Execution #{ids[1]} "
            f"({name}) of run #{running.pk}. It ends cancelled once the processes have "
            "stopped.") in shown
    assert ("warning", f"Execution #{ids[2]} ({name}) of run #{ended.pk} not cancelled: "
            f"Execution {ids[2]} has already ended (cancelled); nothing to cancel.") in shown
    assert Execution.objects.get(pk=ids[0]).status == ExecutionStatus.CANCELLED
    assert status_of(waiting) == RunStatus.CANCELLED
    assert Execution.objects.get(pk=ids[1]).cancel_requested_at is not None
    assert [a.object_id for a in admin_audits("execution.cancelled")] == [str(ids[0])]
    assert [a.object_id for a in admin_audits("execution.cancel")] == [str(ids[1])]


# --- history is read-only ------------------------------------------------------------------------


@pytest.fixture
def history(launch):
    """One row of each history table: the launch writes an Event and an AuditLog row; a
    claimed execution has an Attempt; a log chunk is written as a worker writes it."""
    from django.utils import timezone

    from runs.models import LogChunk

    run = launch()
    execution = start(run)
    chunk = LogChunk.objects.create(execution=execution, attempt=1, seq=1, stream="stdout",
                                    text="hello\n", line_count=1, created_at=timezone.now())
    return {"event": Event.objects.filter(run=run).first(),
            "auditlog": AuditLog.objects.filter(object_id=str(run.pk)).first(),
            "attempt": execution.attempts.get(), "logchunk": chunk}


@pytest.mark.parametrize("model", ["event", "auditlog", "attempt", "logchunk"])
def test_history_cannot_be_added_changed_or_deleted_even_by_a_superuser(root, history, model):
    row = history[model]
    base = f"/admin/runs/{model}/"
    assert root.get(base).status_code == 200
    assert root.get(f"{base}add/").status_code == 403
    assert root.post(f"{base}add/", {}).status_code == 403
    assert root.get(f"{base}{row.pk}/delete/").status_code == 403
    assert root.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    # The change page only shows the row; posting to it is refused.
    change = root.get(f"{base}{row.pk}/change/")
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()
    assert root.post(f"{base}{row.pk}/change/", {"message": "rewritten"}).status_code == 403
    # Nor is there a bulk delete.
    assert "delete_selected" not in root.get(base).content.decode()
    root.post(base, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"})
    type(row).objects.get(pk=row.pk)  # still there
    row.refresh_from_db()
    if model == "event":
        assert row.message != "rewritten"


def test_the_run_admin_cannot_edit_a_status(root, launch):
    run = launch()
    response = root.post(f"{RUNS}{run.pk}/change/", {"status": "succeeded", "_save": "Save"})
    assert response.status_code < 500
    assert status_of(run) == RunStatus.QUEUED


# --- pipelines: re-run, approvals, columns -------------------------------------------------------


def test_the_run_changelist_offers_the_reruns(root, launch):
    launch()
    page = root.get(RUNS).content.decode()
    assert '<option value="rerun_runs_all">Re-run selected runs (all)</option>' in page
    assert ('<option value="rerun_runs_failed">Re-run selected runs (failed only)</option>'
            in page)


def test_rerun_selected_runs_all(root, launch):
    ended, going = launch(), launch()
    run_cancel(run_id=ended.pk, actor=SYSTEM)
    shown = act(root, RUNS, "rerun_runs_all", [ended.pk, going.pk])
    new = Run.objects.get(rerun_of=ended)
    assert ("success", f"Re-ran 1 run: Run #{ended.pk}.") in shown
    assert ("success", f'New run (all): <a href="/runs/{new.pk}/">run #{new.pk}</a> '
            f"(of #{ended.pk}).") in shown
    assert ("warning", f"Run #{going.pk} not re-run: Run {going.pk} is still queued; re-run it "
            "once it has ended, or cancel it first.") in shown
    assert (new.trigger, new.rerun_mode) == (Trigger.RERUN, "all")
    [audit] = admin_audits("run.rerun")
    assert (audit.object_id, audit.actor_label) == (str(new.pk), "root")
    assert not Run.objects.filter(rerun_of=going).exists()


def test_rerun_selected_runs_failed_only(root, project):
    old = drive(pipeline_launch(flaky_matrix(project)))
    good = drive(pipeline_launch(demo(project, "visual-batch")))
    shown = act(root, RUNS, "rerun_runs_failed", [old.pk, good.pk])
    new = Run.objects.get(rerun_of=old)
    assert ("success", f"Re-ran 1 run: Run #{old.pk}.") in shown
    assert ("warning", f"Run #{good.pk} not re-run: Run {good.pk} succeeded; nothing failed to "
            "re-run. Use 're-run all' to run it again.") in shown
    assert new.rerun_mode == "failed"
    assert new.executions.filter(status="pending").count() == 2  # the two failed cells
    assert new.executions.filter(reused_from__isnull=False).count() == 5
    [audit] = admin_audits("run.rerun")
    assert (audit.object_id, audit.actor_label, audit.changes) == (
        str(new.pk), "root", {"rerun_of": old.pk, "mode": "failed"})


def _gates(project, count: int) -> list[Execution]:
    task = demo(project, "deploy")
    return [drive(pipeline_launch(task)).executions.get(status="waiting_approval")
            for _ in range(count)]


def decide(client: Client, action: str, ids: list[int], comment: str = ""
           ) -> list[tuple[str, str]]:
    """Choose the action (the confirmation page), then confirm it with a comment."""
    page = client.post(EXECUTIONS, {"action": action, "_selected_action": ids})
    assert page.status_code == 200
    body = page.content.decode()
    assert 'name="comment"' in body and 'name="post" value="yes"' in body
    assert "waiting_approval" not in body  # statuses in words, as everywhere in the admin
    for pk in ids:
        assert f'name="_selected_action" value="{pk}"' in body
    response = client.post(EXECUTIONS, {"action": action, "_selected_action": ids,
                                        "post": "yes", "comment": comment},
                           headers={"User-Agent": "admin-browser"})
    assert response.status_code == 302, response.content[:500]
    listed = re.search(r'<ul class="messagelist">(.*?)</ul>',
                       client.get(response["Location"]).content.decode(), re.S)
    return [(level, html.unescape(text)) for level, text in
            re.findall(r'<li class="(\w+)">(.*?)</li>', listed.group(1) if listed else "", re.S)]


def test_approve_selected_as_staff(root, project, personas):
    first, second = _gates(project, 2)
    step = Execution.objects.filter(step="package").first()
    shown = decide(root, "approve_executions", [first.pk, second.pk, step.pk], "ship both")
    assert ("success", f"Approved 2 stages: Execution #{first.pk} ({first.name}) of run "
            f"#{first.run_id}, Execution #{second.pk} ({second.name}) of run "
            f"#{second.run_id}.") in shown
    assert ("warning", f"Execution #{step.pk} ({step.name}) of run #{step.run_id} not "
            f"approved: {step.name} is succeeded, not waiting for approval.") in shown
    for gate in (first, second):
        gate.refresh_from_db()
        assert gate.status == ExecutionStatus.SUCCEEDED
        assert gate.result == {"approved": True, "by": "root", "comment": "ship both"}
        assert status_of(gate.run) == RunStatus.RUNNING
        assert Event.objects.filter(run_id=gate.run_id, kind="approval.granted").exists()
    audits = admin_audits("approval.grant")
    assert [a.object_id for a in audits] == sorted([str(first.pk), str(second.pk)])
    assert all(a.changes["comment"] == "ship both" and a.user_agent == "admin-browser"
               for a in audits)


def test_reject_selected_as_staff(root, project):
    [gate] = _gates(project, 1)
    shown = decide(root, "reject_executions", [gate.pk])
    assert shown == [("success", f"Rejected 1 stage: Execution #{gate.pk} ({gate.name}) of run "
                      f"#{gate.run_id}.")]
    assert status_of(gate.run) == RunStatus.FAILED
    assert [a.object_id for a in admin_audits("approval.reject")] == [str(gate.pk)]
    assert Event.objects.filter(run_id=gate.run_id, kind="approval.rejected").exists()


def test_a_too_long_admin_comment_decides_nothing(root, project):
    [gate] = _gates(project, 1)
    shown = decide(root, "approve_executions", [gate.pk], "x" * 1001)
    [(level, text)] = shown
    assert level == "error" and text.startswith("Nothing was decided. The comment is 1001")
    gate.refresh_from_db()
    assert gate.status == ExecutionStatus.WAITING_APPROVAL


def test_executions_show_their_stage_iteration_and_step(root, project):
    run = drive(pipeline_launch(demo(project, "visual-batch")))
    page = root.get(EXECUTIONS).content.decode()
    for column in ("stage", "iteration", "step"):
        # Shown, but not sortable: sorting by an unindexed column scans the table.
        assert f'<th scope="col" class="column-{column}">' in page
    assert page.count('<td class="field-stage">capture</td>') == 6
    change = re.sub(r"\s+", " ", root.get(f"{RUNS}{run.pk}/change/").content.decode())
    assert change.count('<td class="field-stage"> <p>capture</p>') == 6
    assert '<td class="field-step"> <p>shot</p>' in change
    assert "<p>{&quot;page&quot;: &quot;home&quot;, &quot;viewport&quot;: &quot;desktop&quot;}" \
        in change  # the matrix cell



# --- the run and execution pages -----------------------------------------------------------------


def test_the_run_page_shows_every_attempt_and_links_to_the_timeline(root, launch):
    from django.utils import timezone

    from runs.models import Attempt

    run = launch()
    execution = start(run)
    Attempt.objects.filter(execution=execution).update(finished_at=timezone.now(), exit_code=4,
                                                       outcome="unreachable", error="no route")
    Attempt.objects.create(execution=execution, number=2, worker="test-worker",
                           started_at=timezone.now())
    page = re.sub(r"\s+", " ", root.get(f"{RUNS}{run.pk}/change/").content.decode())
    assert (f'<td><a href="/admin/runs/execution/{execution.pk}/change/">#{execution.pk} '
            f'{execution.name}</a></td><td>1</td><td>test-worker</td>') in page
    assert "<td>4</td><td>unreachable</td><td>no route</td>" in page
    assert f"{execution.name}</a></td><td>2</td><td>test-worker</td>" in page
    assert f'<a href="/runs/{run.pk}/">run page (timeline, logs, artifacts)</a>' in page
    events = root.get(f"/admin/runs/event/?run__id__exact={run.pk}").content.decode()
    assert f"{Event.objects.filter(run=run).count()} events" in events
    audits = root.get(f"/admin/runs/auditlog/?object_type=run&object_id={run.pk}")
    assert "1 audit log" in audits.content.decode()  # the launch


def test_the_execution_page_says_why_it_waits(root, launch):
    run = launch()
    execution = run.executions.get()
    page = root.get(f"{EXECUTIONS}{execution.pk}/change/").content.decode()
    assert "no worker alive: start one with manage.py qcluster" in page
    running = start(launch())
    page = root.get(f"{EXECUTIONS}{running.pk}/change/").content.decode()
    assert "no worker alive" not in page


def test_audit_rows_link_to_their_object(root, launch):
    run = launch()
    page = root.get("/admin/runs/auditlog/").content.decode()
    assert f'<a href="/admin/runs/run/{run.pk}/change/">run {run.pk}</a>' in page


def test_run_and_execution_pages_are_read_only_with_a_delete_for_finished_runs(root, launch):
    run = launch()
    execution = run.executions.get()
    page = root.get(f"{RUNS}{run.pk}/change/").content.decode()
    assert 'name="_save"' not in page and 'class="deletelink"' not in page  # still queued
    assert root.post(f"{RUNS}{run.pk}/change/", {"_save": "Save"}).status_code == 403
    run_cancel(run_id=run.pk, actor=SYSTEM)
    page = root.get(f"{RUNS}{run.pk}/change/").content.decode()
    assert 'name="_save"' not in page and f"{RUNS}{run.pk}/delete/" in page
    execution_page = root.get(f"{EXECUTIONS}{execution.pk}/change/").content.decode()
    assert 'name="_save"' not in execution_page
    assert root.post(f"{EXECUTIONS}{execution.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Execution.objects.filter(pk=execution.pk).exists()


def test_a_finished_run_is_deleted_from_its_page_with_its_history_counted(root, launch):
    from django.utils import timezone

    from runs.models import LogChunk

    run = launch()
    execution = start(run)
    LogChunk.objects.bulk_create([
        LogChunk(execution=execution, attempt=1, seq=seq, stream="stdout", text="x\n",
                 line_count=1, created_at=timezone.now()) for seq in range(1, 51)])
    run_cancel(run_id=run.pk, actor=SYSTEM)  # asks the running execution to stop
    from runs.transitions import execution_finish

    execution_finish(execution_id=execution.pk, attempt_number=1, status="cancelled",
                     exit_code=-15)
    events = Event.objects.filter(run=run).count()
    page = re.sub(r"\s+", " ", root.get(f"{RUNS}{run.pk}/delete/").content.decode())
    assert "<li>1 execution</li> <li>1 attempt</li>" in page
    assert f"<li>{events} events</li> <li>50 log chunks</li>" in page
    assert "permission to delete" not in page
    response = root.post(f"{RUNS}{run.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Run.objects.filter(pk=run.pk).exists()
    assert not LogChunk.objects.filter(execution_id=execution.pk).exists()
    [audit] = admin_audits("run.delete")
    assert audit.object_id == str(run.pk) and audit.actor_label == "root"
