"""The run page of pipelines: stage strip and progress, executions grouped by stage and
iteration, approve and reject from the page, re-run all or failed only, and the live poll.

The demo pipelines of `runs.demo` run for real in this process (`drive` from test_pipelines).
Personas come from tests/conftest.py: alice (maintainer), bob (operator), carol (viewer) of
project `demo`, and mallory, who is in no project.
"""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client

from runs.models import (
    Attempt,
    AuditLog,
    Event,
    Execution,
    ExecutionStatus,
    Run,
    RunStatus,
    Trigger,
)
from runs.services import run_rerun
from tests.factories import TaskFactory
from tests.runs.test_pipelines import BOB, demo, drive, launch

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}


def page_of(client: Client, run: Run) -> str:
    response = client.get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def messages_in(page: str) -> list[tuple[str, str]]:
    return [(level, html.unescape(text)) for level, text in
            re.findall(r'<li class="notice notice-(\w+)">(.*?)</li>', page, re.S)]


def strip_of(page: str) -> list[tuple[str, str, str, bool]]:
    """(name, status text, facts, current) per stage of the stage strip."""
    rows = []
    for item in re.findall(r'<li class="stage [^"]*"[^>]*>.*?</li>', page, re.S):
        name = re.search(r'class="stage-name">([^<]*)<', item).group(1)
        status = re.search(r'class="stage-status">([^<]*)', item).group(1).strip()
        facts = re.search(r'class="stage-facts">([^<]*)<', item).group(1).strip()
        rows.append((name, status, facts, 'aria-current="step"' in item))
    return rows


def groups_of(page: str) -> list[tuple[str, bool]]:
    """(group id, open) of each stage group, in page order."""
    return [(gid, " open" in attrs) for gid, attrs in
            re.findall(r'<details class="stage-group" id="(group-\d+-\d+)"([^>]*)>', page)]


def poll(client: Client, run: Run, page: str) -> str:
    """The live poll the page would send next (its poller's URL)."""
    url = html.unescape(re.search(r'id="run-poller"[^>]*hx-get="([^"]+)"', page).group(1))
    response = client.get(url, headers=HX)
    assert response.status_code == 200
    return response.content.decode()


def next_poller(body: str) -> str:
    """A poll response as a page, for the poll after it."""
    return body


def gate_of(run: Run) -> Execution:
    return run.executions.get(status=ExecutionStatus.WAITING_APPROVAL)


def status_of(run: Run) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run.pk)


def maintainer_gate_task(project):
    return TaskFactory(
        project=project, slug="guarded", kind="pipeline", params_schema=[],
        spec={"stages": [{"name": "release", "approval": {"role": "maintainer"},
                          "steps": [{"name": "go", "command": ["true"]}]}]},
    )


def flaky_matrix(project):
    """prepare, then a 3 x 2 matrix in which the two page=b cells fail, then report."""
    return TaskFactory(
        project=project, slug="flaky", kind="pipeline", params_schema=[],
        spec={"stages": [
            {"name": "prepare", "steps": [{"name": "setup", "command": ["true"]}]},
            {"name": "check", "matrix": {"page": ["a", "b", "c"], "size": ["s", "m"]},
             "steps": [{"name": "probe", "command": [
                 "python3", "-c", "import sys; sys.exit(1 if sys.argv[1] == 'b' else 0)",
                 "{{ page }}"]}]},
            {"name": "report", "steps": [{"name": "sum", "command": ["true"]}]},
        ]},
    )


# --- stage strip, progress, groups -------------------------------------------------------------


def test_a_new_pipeline_run_shows_its_stages_with_the_first_one_current(project, personas,
                                                                        client_for):
    run = launch(demo(project, "agent-pipeline"), qa_fails="once")
    page = page_of(client_for("carol"), run)
    # A stage whose executions exist is under way, even before a worker took one.
    assert strip_of(page) == [
        ("dev", "Running", "0/1", True),
        ("qa", "Pending", "0/1", False),
        ("sec", "Pending", "0/1", False),
        ("docs", "Pending", "0/1", False),
    ]
    assert ">current stage<" in page  # said in words, not by the highlight alone
    assert re.search(r'<progress class="progress-bar[^"]*" max="4" value="0"', page)
    assert "<strong>0 of 4</strong> executions done" in page
    assert groups_of(page) == [("group-0-1", True)]


def test_the_agent_pipeline_page_keeps_the_first_iteration_collapsed(project, personas,
                                                                     client_for):
    run = drive(launch(demo(project, "agent-pipeline"), qa_fails="once"))
    assert run.status == RunStatus.SUCCEEDED
    page = page_of(client_for("carol"), run)
    # The loop-back's first try stays on the page, folded; the second iteration is open.
    assert groups_of(page) == [("group-0-1", False), ("group-1-1", False),
                               ("group-0-2", True), ("group-1-2", True),
                               ("group-2-2", True), ("group-3-2", True)]
    qa1 = re.search(r'id="group-1-1-state".*?</span>\s*</span>', page, re.S).group(0)
    assert "Iteration 1" in qa1 and ">Failed<" in qa1 and "looped back" in qa1
    assert strip_of(page) == [
        ("dev", "Succeeded", "1/1 · iteration 2", False),
        ("qa", "Succeeded", "1/1 · iteration 2", False),
        ("sec", "Succeeded", "1/1 · iteration 2", False),
        ("docs", "Succeeded", "1/1 · iteration 2", False),
    ]
    assert "<strong>4 of 4</strong> executions done <span class=\"muted\">(100%)</span>" in page
    assert "Iteration 2" in page
    # QA's finding is on the page, in the first iteration's card.
    assert "QA finding: test_checkout fails with a KeyError" in page


def test_a_matrix_stage_shows_each_cells_values(project, personas, client_for):
    run = launch(demo(project, "visual-batch"))
    page = page_of(client_for("carol"), run)
    cells = re.findall(r'<span class="cell-axis">(\w+)</span> <span class="cell-value">(\w+)'
                       r'</span></span><span class="cell-pair"><span class="cell-axis">(\w+)'
                       r'</span> <span class="cell-value">(\w+)</span>', page)
    assert sorted((p, v) for _a, p, _b, v in cells) == sorted(
        (p, v) for p in ("home", "pricing", "docs") for v in ("desktop", "phone"))
    assert all(a == "page" and b == "viewport" for a, _p, b, _v in cells)
    assert strip_of(page) == [("capture", "Running", "0/6", True)]
    # The overview at the top of the stage: every cell, linked to its card, with its status.
    overview = re.search(r'<div class="matrix-overview" id="group-0-1-cells">.*?</ul>', page,
                         re.S).group(0)
    assert "6 cells: page × viewport" in overview
    links = re.findall(r'<a class="matrix-cell" href="#execution-(\d+)"><span '
                       r'class="matrix-cell-name">([^<]+)</span><span class="badge '
                       r'badge-pending">Pending</span>', overview)
    assert sorted(name for _pk, name in links) == sorted(
        f"{p} · {v}" for p in ("home", "pricing", "docs") for v in ("desktop", "phone"))
    assert {int(pk) for pk, _name in links} == set(run.executions.values_list("pk", flat=True))
    live = poll(client_for("carol"), run, page)
    assert re.search(r'<div class="matrix-overview" id="group-0-1-cells" hx-swap-oob="true">',
                     live)

    run = drive(run)
    page = page_of(client_for("carol"), run)
    assert strip_of(page) == [("capture", "Succeeded", "6/6", False)]
    assert "6 of 6 done" in page


def test_a_plain_run_has_no_stage_strip(hello_task, personas, client_for):
    run = launch(hello_task, name="Ada")
    page = page_of(client_for("carol"), run)
    assert 'id="run-progress"' not in page and "stage-group" not in page


# --- the live poll -----------------------------------------------------------------------------


def test_the_live_poll_refreshes_the_progress_and_adds_the_next_stages(project, personas,
                                                                      client_for):
    run = launch(demo(project, "agent-pipeline"), qa_fails="once")
    client = client_for("carol")
    page = page_of(client, run)
    drive(run, limit=1)  # dev ran; qa was created
    body = poll(client, run, page)
    assert re.search(r'<section id="run-progress"[^>]*hx-swap-oob="true"', body)
    assert strip_of(body)[:2] == [("dev", "Succeeded", "1/1", False),
                                  ("qa", "Running", "0/1", True)]
    assert re.search(r'<span class="stage-group-state" id="group-0-1-state" '
                     r'hx-swap-oob="true">', body)
    # The qa stage is new to the page: it comes as a whole group, appended.
    new = re.search(r'<div hx-swap-oob="beforeend:#executions">(.*)</div>', body, re.S)
    assert new and groups_of(new.group(1)) == [("group-1-1", True)]

    drive(run, limit=1)  # qa failed: loop back to dev, iteration 2
    body = poll(client, run, next_poller(body))
    new = re.search(r'<div hx-swap-oob="beforeend:#executions">(.*)</div>', body, re.S)
    assert groups_of(new.group(1)) == [("group-0-2", True)]
    states = dict(re.findall(r'id="(group-\d-\d)-state" hx-swap-oob="true">(.*?)\n</span>',
                             body, re.S))
    assert set(states) == {"group-0-1", "group-1-1"}
    assert "Iteration 1" in states["group-0-1"] and "looped back" in states["group-0-1"]
    # QA's first try stays the latest QA until QA runs again.
    assert ">Failed<" in states["group-1-1"] and "looped back" not in states["group-1-1"]


def test_the_live_poll_adds_an_approved_stages_steps_to_its_group(project, personas,
                                                                 client_for):
    run = drive(launch(demo(project, "deploy")))
    client = client_for("bob")
    page = page_of(client, run)
    client.post(f"/executions/{gate_of(run).pk}/approve")
    body = poll(client, run, page)
    ship = run.executions.get(step="ship")
    appended = re.search(r'<div hx-swap-oob="beforeend:#group-1-1-list">(.*?)</article>', body,
                         re.S)
    assert appended and f'id="execution-{ship.pk}"' in appended.group(1)
    assert "beforeend:#executions" not in body
    # The gate's card is re-sent with its decision.
    assert "Approved by bob" in body


# --- approvals ---------------------------------------------------------------------------------


def test_a_waiting_run_says_who_must_approve_and_offers_the_form_to_operators(project,
                                                                             personas,
                                                                             client_for):
    run = drive(launch(demo(project, "deploy")))
    gate = gate_of(run)
    page = page_of(client_for("bob"), run)
    assert '<span class="badge badge-waiting">Waiting</span>' in page
    assert ("Waiting for approval: stage <strong>production</strong> needs an operator or a "
            "maintainer to approve it.") in page
    assert f'<a href="#execution-{gate.pk}">Go to the approval</a>' in page
    assert "Waiting for approval by an operator or a maintainer." in page
    form = re.search(r'<form method="post" action="/executions/(\d+)/approve".*?</form>', page,
                     re.S)
    assert form and int(form.group(1)) == gate.pk
    form = form.group(0)
    assert 'name="csrfmiddlewaretoken"' in form
    assert f'<textarea id="approval-{gate.pk}-comment" name="comment" rows="2" maxlength="1000"' in form
    assert f'formaction="/executions/{gate.pk}/reject"' in form
    assert form.count("hx-confirm=") == 2 and form.count("hx-post=") == 2
    assert strip_of(page)[1] == ("production", "Waiting for approval", "0/1", True)


def test_a_viewer_sees_the_wait_but_no_approval_form(project, personas, client_for):
    run = drive(launch(demo(project, "deploy")))
    page = page_of(client_for("carol"), run)
    assert "Waiting for approval by an operator or a maintainer." in page
    assert "Only an operator or a maintainer of this project can approve or reject it." in page
    assert "/approve" not in page and "/reject" not in page


def test_an_operator_approves_from_the_page(project, personas, client_for):
    run = drive(launch(demo(project, "deploy"), version="2.0.0"))
    gate = gate_of(run)
    client = client_for("bob")
    response = client.post(f"/executions/{gate.pk}/approve", {"comment": "  ship it  "},
                           headers={"User-Agent": "test-browser"})
    assert response.status_code == 303
    assert response["Location"] == f"/runs/{run.pk}/"
    gate.refresh_from_db()
    assert gate.status == ExecutionStatus.SUCCEEDED
    assert gate.result == {"approved": True, "by": "bob", "comment": "ship it"}
    audit = AuditLog.objects.get(action="approval.grant")
    assert (audit.via, audit.actor, audit.user_agent) == ("ui", personas["bob"], "test-browser")
    assert audit.changes["comment"] == "ship it"
    assert Event.objects.filter(run=run, kind="approval.granted").exists()
    page = page_of(client, run)
    assert ("success", f"Stage production of run #{run.pk} approved: the run continues.") in (
        messages_in(page))
    assert "Approved by bob: <q>ship it</q>" in page
    assert drive(run).status == RunStatus.SUCCEEDED


def test_an_operator_rejects_from_the_page(project, personas, client_for):
    run = drive(launch(demo(project, "deploy")))
    gate = gate_of(run)
    client = client_for("bob")
    response = client.post(f"/executions/{gate.pk}/reject", {"comment": "not today"})
    assert response.status_code == 303
    assert status_of(run) == RunStatus.FAILED
    audit = AuditLog.objects.get(action="approval.reject")
    assert (audit.via, audit.actor, audit.changes["comment"]) == ("ui", personas["bob"],
                                                                 "not today")
    assert Event.objects.filter(run=run, kind="approval.rejected").exists()
    page = page_of(client, run)
    [(level, text)] = messages_in(page)
    assert level == "success" and text.startswith(f"Stage production of run #{run.pk} rejected")
    assert "Rejected by bob: <q>not today</q>" in page
    assert "production rejected by bob: not today" in page  # the run's reason
    assert not run.executions.filter(step="ship").exists()


def test_approving_with_htmx_sends_the_browser_back_to_the_run_page(project, personas,
                                                                    client_for):
    run = drive(launch(demo(project, "deploy")))
    response = client_for("bob").post(
        f"/executions/{gate_of(run).pk}/approve", {"comment": ""},
        headers={**HX, "HX-Current-URL": f"http://testserver/runs/{run.pk}/"})
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/runs/{run.pk}/"
    assert status_of(run) == RunStatus.RUNNING


def test_a_rejected_approval_shows_its_stage_failed_in_the_strip(project, personas,
                                                                 client_for):
    run = drive(launch(demo(project, "deploy")))
    client = client_for("bob")
    client.post(f"/executions/{gate_of(run).pk}/reject")
    page = page_of(client, run)
    assert strip_of(page)[1] == ("production", "Failed", "0/1", False)
    assert '<span class="badge badge-failed">Rejected</span>' in page


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_a_viewer_gets_403_and_an_outsider_404(project, personas, client_for, action):
    run = drive(launch(demo(project, "deploy")))
    gate = gate_of(run)
    assert client_for("carol").post(f"/executions/{gate.pk}/{action}").status_code == 403
    assert client_for("mallory").post(f"/executions/{gate.pk}/{action}").status_code == 404
    assert Client().post(f"/executions/{gate.pk}/{action}").status_code == 302  # to login
    gate.refresh_from_db()
    assert gate.status == ExecutionStatus.WAITING_APPROVAL
    assert not AuditLog.objects.filter(action__startswith="approval.").exists()


def test_a_maintainer_only_approval_refuses_an_operator(project, personas, client_for):
    run = drive(launch(maintainer_gate_task(project)))
    gate = gate_of(run)
    bob_page = page_of(client_for("bob"), run)
    assert "Waiting for approval by a maintainer." in bob_page
    assert f"/executions/{gate.pk}/approve" not in bob_page
    assert client_for("bob").post(f"/executions/{gate.pk}/approve").status_code == 403
    gate.refresh_from_db()
    assert gate.status == ExecutionStatus.WAITING_APPROVAL

    alice = client_for("alice")
    assert f'action="/executions/{gate.pk}/approve"' in page_of(alice, run)
    assert alice.post(f"/executions/{gate.pk}/approve").status_code == 303
    assert drive(run).status == RunStatus.SUCCEEDED


def test_deciding_twice_is_a_message_not_an_error(project, personas, client_for):
    run = drive(launch(demo(project, "deploy")))
    gate = gate_of(run)
    client = client_for("bob")
    client.post(f"/executions/{gate.pk}/approve")
    page_of(client, run)  # consumes the first message
    response = client.post(f"/executions/{gate.pk}/reject", follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(f"/runs/{run.pk}/", 303)]
    [(level, text)] = messages_in(response.content.decode())
    assert level == "error" and "not waiting for approval" in text
    assert AuditLog.objects.filter(action__startswith="approval.").count() == 1


def test_approving_an_execution_that_is_no_gate_is_refused(project, personas, client_for):
    run = launch(demo(project, "agent-pipeline"), qa_fails="never")
    step = run.executions.get()
    response = client_for("bob").post(f"/executions/{step.pk}/approve", follow=True)
    [(level, text)] = messages_in(response.content.decode())
    assert level == "error" and "not waiting for approval" in text


@pytest.mark.parametrize(
    ("comment", "message"),
    [
        ("x" * 1001, "The comment is 1001 characters long; shorten it to 1000 or fewer"),
        ("bad\x00byte", "The comment contains a NUL character"),
    ],
)
def test_a_bad_comment_is_refused_with_a_message(project, personas, client_for, comment,
                                                 message):
    run = drive(launch(demo(project, "deploy")))
    gate = gate_of(run)
    response = client_for("bob").post(f"/executions/{gate.pk}/approve", {"comment": comment},
                                      follow=True)
    assert response.status_code == 200
    [(level, text)] = messages_in(response.content.decode())
    assert level == "error" and text.startswith(message)
    gate.refresh_from_db()
    assert gate.status == ExecutionStatus.WAITING_APPROVAL


def test_the_longest_comment_is_accepted(project, personas, client_for):
    run = drive(launch(demo(project, "deploy")))
    gate = gate_of(run)
    assert client_for("bob").post(f"/executions/{gate.pk}/reject",
                                  {"comment": "é" * 1000}).status_code == 303
    assert status_of(run) == RunStatus.FAILED


@pytest.mark.parametrize("path", ["/executions/{gate}/approve", "/executions/{gate}/reject",
                                  "/runs/{run}/rerun"])
def test_get_on_approve_reject_and_rerun_is_405(project, personas, client_for, path):
    run = drive(launch(demo(project, "deploy")))
    url = path.format(gate=gate_of(run).pk, run=run.pk)
    assert client_for("bob").get(url).status_code == 405


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/executions/999999999999999999/approve", {}),
        ("/executions/9999999999999999999/reject", {}),
        ("/executions/{gate}/approve", {"comment": ["a", "b"]}),
        ("/executions/{gate}/reject", {"comment": "💥" * 1000}),
        ("/runs/{run}/rerun", {"mode": "everything"}),
        ("/runs/{run}/rerun", {"mode": "\x00"}),
        ("/runs/999999999999999999/rerun", {"mode": "all"}),
    ],
)
def test_no_approval_or_rerun_input_causes_a_500(project, personas, client_for, path, data):
    run = drive(launch(demo(project, "deploy")))
    url = path.format(gate=gate_of(run).pk, run=run.pk)
    assert client_for("bob").post(url, data).status_code < 500


def test_approving_needs_the_csrf_token(project, personas, client_for):
    run = drive(launch(demo(project, "deploy")))
    gate = gate_of(run)
    client = client_for("bob", enforce_csrf_checks=True)
    assert client.post(f"/executions/{gate.pk}/approve").status_code == 403
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"',
                      page_of(client, run)).group(1)
    assert client.post(f"/executions/{gate.pk}/approve",
                       {"csrfmiddlewaretoken": token}).status_code == 303


# --- re-run ------------------------------------------------------------------------------------


def test_a_failed_pipeline_offers_both_reruns_to_operators_only(project, personas, client_for):
    run = drive(launch(flaky_matrix(project)))
    assert run.status == RunStatus.FAILED
    page = page_of(client_for("bob"), run)
    forms = re.findall(rf'<form method="post" action="/runs/{run.pk}/rerun".*?</form>', page,
                       re.S)
    assert len(forms) == 2
    assert ['value="all"' in forms[0], 'value="failed"' in forms[1]] == [True, True]
    assert ">Re-run all<" in forms[0] and ">Re-run failed only<" in forms[1]
    for form in forms:
        assert "csrfmiddlewaretoken" in form and "hx-confirm=" in form
    carol = page_of(client_for("carol"), run)
    assert "/rerun" not in carol and "Re-run" not in carol


def test_a_succeeded_pipeline_offers_only_rerun_all(project, personas, client_for):
    run = drive(launch(demo(project, "visual-batch")))
    page = page_of(client_for("bob"), run)
    assert ">Re-run all<" in page and "Re-run failed only" not in page


def test_a_running_pipeline_offers_no_rerun(project, personas, client_for):
    run = launch(demo(project, "visual-batch"))
    page = page_of(client_for("bob"), run)
    assert "/rerun" not in page
    response = client_for("bob").post(f"/runs/{run.pk}/rerun", {"mode": "all"}, follow=True)
    [(level, text)] = messages_in(response.content.decode())
    assert level == "error" and "re-run it once it has ended" in text
    assert not Run.objects.filter(rerun_of=run).exists()


def test_rerun_failed_only_from_the_page(project, personas, client_for):
    old = drive(launch(flaky_matrix(project)))
    client = client_for("bob")
    response = client.post(f"/runs/{old.pk}/rerun", {"mode": "failed"})
    assert response.status_code == 303
    new = Run.objects.get(rerun_of=old)
    assert response["Location"] == f"/runs/{new.pk}/"
    assert (new.trigger, new.rerun_mode, new.created_by) == (Trigger.RERUN, "failed",
                                                             personas["bob"])
    audit = AuditLog.objects.get(action="run.rerun")
    assert (audit.via, audit.actor) == ("ui", personas["bob"])

    page = page_of(client, new)
    assert ("success", f"Run #{new.pk} queued: a re-run (failed only) of run #{old.pk}.") in (
        messages_in(page))
    assert re.search(rf'Re-run of <a href="/runs/{old.pk}/">run #{old.pk}</a> \(failed only',
                     page)
    # The five executions that succeeded are taken over, each saying where from.
    assert page.count(f">Reused from run #{old.pk}</a>") == 5
    assert page.count("Result reused") == 5
    assert strip_of(page)[:2] == [("prepare", "Succeeded", "1/1", False),
                                  ("check", "Running", "4/6", True)]

    old_page = page_of(client, old)
    assert re.search(rf'<a href="/runs/{new.pk}/">Run #{new.pk}</a> <span class="muted">'
                     r'\(failed only\)</span>', old_page)

    # The page=b cells fail by design, so they fail again; only they ran.
    new = drive(new)
    assert new.status == RunStatus.FAILED
    assert Attempt.objects.filter(execution__run=new).count() == 2


def test_rerun_all_from_the_page(project, personas, client_for):
    old = drive(launch(demo(project, "visual-batch")))
    client = client_for("bob")
    response = client.post(f"/runs/{old.pk}/rerun", {"mode": "all"}, follow=True)
    new = Run.objects.get(rerun_of=old)
    assert response.redirect_chain == [(f"/runs/{new.pk}/", 303)]
    page = response.content.decode()
    assert f"Re-run of <a href=\"/runs/{old.pk}/\">run #{old.pk}</a> (all)" in page
    assert "Reused from run" not in page
    assert new.executions.count() == 6


def test_rerun_failed_only_of_a_succeeded_run_says_why(project, personas, client_for):
    run = drive(launch(demo(project, "visual-batch")))
    response = client_for("bob").post(f"/runs/{run.pk}/rerun", {"mode": "failed"}, follow=True)
    assert response.redirect_chain == [(f"/runs/{run.pk}/", 303)]
    [(level, text)] = messages_in(response.content.decode())
    assert level == "error" and "nothing failed to re-run" in text


def test_an_unknown_rerun_mode_is_a_message(project, personas, client_for):
    run = drive(launch(flaky_matrix(project)))
    response = client_for("bob").post(f"/runs/{run.pk}/rerun", {"mode": "most"}, follow=True)
    [(level, text)] = messages_in(response.content.decode())
    assert level == "error" and text.startswith("Unknown re-run mode 'most'")
    assert not Run.objects.filter(rerun_of=run).exists()


def test_rerun_refusals_by_role(project, personas, client_for):
    run = drive(launch(flaky_matrix(project)))
    assert client_for("carol").post(f"/runs/{run.pk}/rerun").status_code == 403
    assert client_for("mallory").post(f"/runs/{run.pk}/rerun").status_code == 404
    assert not Run.objects.filter(rerun_of=run).exists()


def test_an_old_run_lists_a_bounded_number_of_reruns(project, personas, client_for,
                                                     monkeypatch):
    monkeypatch.setattr("runs.run_views.RERUNS_LISTED", 2)
    old = drive(launch(demo(project, "visual-batch")))
    news = [run_rerun(run=old, mode="all", actor=BOB) for _ in range(3)]
    page = page_of(client_for("carol"), old)
    listed = re.findall(r'<li><a href="/runs/(\d+)/">Run #\d+</a>', page)
    assert listed == [str(news[2].pk), str(news[1].pk)]  # newest first


# --- query counts ------------------------------------------------------------------------------


def _counts(client: Client, run: Run, django_assert_num_queries, page_queries: int,
            poll_queries: int) -> None:
    with django_assert_num_queries(page_queries):
        page = page_of(client, run)
    with django_assert_num_queries(poll_queries):
        poll(client, run, page) if 'id="run-poller" class="live-status" hx-get' in page else \
            client.get(f"/runs/{run.pk}/live?events_after=0", headers=HX)


def test_the_pipeline_page_query_count_does_not_grow_with_executions(
        project, personas, client_for, django_assert_num_queries):
    client = client_for("carol")
    # Ended: session, user, run, role (run_get), executions, attempts, role (controls and
    # approvals), log tails, events, re-runs, and the worker banner (is a worker alive? how
    # many executions wait?); the poll does not list re-runs, nor draw the banner.
    agent = demo(project, "agent-pipeline")
    small = drive(launch(agent, qa_fails="never"))  # 4 executions
    _counts(client, small, django_assert_num_queries, 13, 9)
    looped = drive(launch(agent, qa_fails="always"))  # 6 executions in 3 iterations
    assert looped.executions.count() == 6
    _counts(client, looped, django_assert_num_queries, 13, 9)
    wide = TaskFactory(project=project, kind="pipeline", params_schema=[], spec={"stages": [
        {"name": "fan", "matrix": {"x": list(range(4)), "y": list(range(3))},
         "steps": [{"name": "noop", "command": ["true"]}]},
        {"name": "gate", "approval": {"role": "operator"}, "steps": []}]})
    many = drive(launch(wide))  # 12 executions and a rejected approval
    gate = gate_of(many)
    client_for("bob").post(f"/executions/{gate.pk}/reject")
    many.refresh_from_db()
    assert many.executions.count() == 13 and many.status == RunStatus.FAILED
    _counts(client, many, django_assert_num_queries, 13, 9)


def test_a_running_pipeline_page_query_count_is_fixed(project, personas, client_for,
                                                     django_assert_num_queries):
    # Going on: no re-run query, but one for the workers (pending executions say why they
    # wait, "no worker alive" included), and on the page the worker banner's two.
    client = client_for("bob")
    few = launch(demo(project, "deploy"))  # 1 pending execution
    _counts(client, few, django_assert_num_queries, 13, 10)
    many = launch(demo(project, "visual-batch"))  # 6 pending executions
    _counts(client, many, django_assert_num_queries, 13, 10)
