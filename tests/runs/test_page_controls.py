"""Run controls on the pages: cancel, pause and resume a run, cancel one execution.

Personas come from tests/conftest.py: alice (maintainer), bob (operator), carol (viewer) of
project `demo`, and mallory, who is in no project. Operators and above see and use the
controls; viewers get 403 and outsiders 404, and neither sees a control form.
"""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client

from runs.models import AuditLog, Execution, ExecutionStatus, Role, Run, RunStatus, Trigger
from runs.services import run_launch
from runs.transitions import Actor, execution_claim, execution_queue
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

CONTROL_FORM = re.compile(r'<form[^>]+action="/(runs|executions)/\d+/(cancel|pause|resume)"')


@pytest.fixture
def run(hello_task, personas) -> Run:
    """A queued run: nothing dispatches it, no worker runs in these tests."""
    created, _ = run_launch(task=hello_task, raw_params={"name": "Ada"},
                            actor=Actor(user=personas["bob"], via="ui", label="bob"),
                            trigger=Trigger.UI)
    return created


def start(run: Run) -> Execution:
    """Queue and claim the run's execution as a worker would: it is running."""
    execution = run.executions.get()
    assert execution_queue(execution_id=execution.pk)
    assert execution_claim(execution_id=execution.pk, worker="test-worker") is not None
    return Execution.objects.get(pk=execution.pk)


def status_of(run: Run) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run.pk)


def page_of(client: Client, run: Run) -> str:
    response = client.get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def messages_in(page: str) -> list[tuple[str, str]]:
    """(level, text) of the flash messages on a page."""
    return [(level, html.unescape(text)) for level, text in
            re.findall(r'<li class="notice notice-(\w+)">(.*?)</li>', page, re.S)]


# --- what the run page offers ------------------------------------------------------------------


def test_an_operator_sees_pause_and_cancel_on_a_queued_run(client_for, run):
    page = page_of(client_for("bob"), run)
    assert f'action="/runs/{run.pk}/pause"' in page
    assert f'action="/runs/{run.pk}/cancel"' in page
    assert f'action="/runs/{run.pk}/resume"' not in page
    execution = run.executions.get()
    assert f'action="/executions/{execution.pk}/cancel"' in page
    # Each form posts with CSRF and, with JavaScript, asks first.
    forms = re.findall(r"<form[^>]+control-form.*?</form>", page, re.S)
    assert len(forms) == 3
    for form in forms:
        assert 'name="csrfmiddlewaretoken"' in form
        assert 'method="post"' in form and "hx-post=" in form and "hx-confirm=" in form
    assert 'name="reason"' in page and 'maxlength="120"' in page


def test_a_maintainer_sees_the_controls_too(client_for, run):
    assert f'action="/runs/{run.pk}/cancel"' in page_of(client_for("alice"), run)


def test_a_paused_run_offers_resume_not_pause(client_for, run, personas):
    client = client_for("bob")
    client.post(f"/runs/{run.pk}/pause")
    page = page_of(client, run)
    assert f'action="/runs/{run.pk}/resume"' in page
    assert f'action="/runs/{run.pk}/pause"' not in page
    assert f'action="/runs/{run.pk}/cancel"' in page


def test_an_ended_run_offers_only_a_rerun(client_for, run):
    client = client_for("bob")
    client.post(f"/runs/{run.pk}/cancel")
    assert status_of(run) == RunStatus.CANCELLED
    page = page_of(client, run)
    assert not CONTROL_FORM.search(page)
    assert not re.search(r'<section id="run-controls"[^>]*\bhidden>', page)
    assert f'action="/runs/{run.pk}/rerun"' in page and ">Re-run all<" in page
    # One command has nothing that succeeded to reuse: "failed only" is for pipelines.
    assert "Re-run failed only" not in page


@pytest.mark.parametrize("name", ["carol", "mallory"])
def test_viewers_and_outsiders_see_no_control_forms(client_for, run, name):
    response = client_for(name).get(f"/runs/{run.pk}/")
    assert response.status_code == (200 if name == "carol" else 404)
    page = response.content.decode()
    assert not CONTROL_FORM.search(page)
    assert "run-controls" not in page
    assert "Cancel run" not in page


def test_a_viewer_live_poll_carries_no_controls(client_for, run):
    execution = run.executions.get()
    body = client_for("carol").get(
        f"/runs/{run.pk}/live?events_after=0&log={execution.pk}:0", headers={"HX-Request": "true"}
    ).content.decode()
    assert not CONTROL_FORM.search(body)
    assert "run-controls" not in body


# --- cancel, pause, resume ---------------------------------------------------------------------


def test_an_operator_cancels_a_run_with_a_reason(client_for, run, personas):
    client = client_for("bob")
    response = client.post(f"/runs/{run.pk}/cancel", {"reason": "  wrong name  "},
                           headers={"User-Agent": "test-browser"})
    assert response.status_code == 303
    assert response["Location"] == f"/runs/{run.pk}/"
    assert status_of(run) == RunStatus.CANCELLED
    audit = AuditLog.objects.get(action="run.cancel", object_id=str(run.pk))
    assert (audit.via, audit.actor, audit.actor_label) == ("ui", personas["bob"], "bob")
    assert audit.changes == {"reason": "wrong name"}
    assert audit.ip_address == "127.0.0.1" and audit.user_agent == "test-browser"
    page = page_of(client, run)
    assert ("success", f"Run #{run.pk} cancelled.") in messages_in(page)
    assert "cancelled by bob: wrong name" in page  # the timeline says who and why


def test_cancelling_a_running_run_asks_it_to_stop_and_says_so(client_for, run):
    execution = start(run)
    client = client_for("bob")
    client.post(f"/runs/{run.pk}/cancel")
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.RUNNING and execution.cancel_requested_at
    assert status_of(run) == RunStatus.RUNNING
    page = page_of(client, run)
    [(level, text)] = messages_in(page)
    assert level == "success" and text.startswith(f"Cancel requested for run #{run.pk}")
    assert re.search(r'class="tag tag-warning"[^>]*>Cancel requested<', page)
    # Nothing left to cancel or pause: the page says the stop is pending instead.
    assert not CONTROL_FORM.search(page)
    assert "Stop requested: waiting for the running executions to end." in page


def test_an_operator_pauses_and_resumes(client_for, run, personas):
    client = client_for("bob")
    response = client.post(f"/runs/{run.pk}/pause")
    assert response.status_code == 303
    assert status_of(run) == RunStatus.PAUSED
    assert ("success", f"Run #{run.pk} paused: no new executions start until it is resumed; "
            "running ones finish.") in messages_in(page_of(client, run))
    response = client.post(f"/runs/{run.pk}/resume")
    assert response.status_code == 303
    assert status_of(run) == RunStatus.QUEUED  # nothing had started
    audits = AuditLog.objects.filter(object_id=str(run.pk), object_type="run").exclude(
        action="run.launch").order_by("id")
    assert [(a.action, a.via, a.actor) for a in audits] == [
        ("run.paused", "ui", personas["bob"]),
        ("run.queued", "ui", personas["bob"]),
    ]
    assert ("success", f"Run #{run.pk} resumed.") in messages_in(page_of(client, run))


def test_an_operator_cancels_one_execution(client_for, run, personas):
    execution = run.executions.get()
    response = client_for("bob").post(f"/executions/{execution.pk}/cancel")
    assert response.status_code == 303
    assert response["Location"] == f"/runs/{run.pk}/"
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED
    assert status_of(run) == RunStatus.CANCELLED  # its only execution ended
    audit = AuditLog.objects.get(object_type="execution", object_id=str(execution.pk))
    assert (audit.action, audit.via, audit.actor) == ("execution.cancelled", "ui",
                                                      personas["bob"])


def test_cancelling_a_running_execution_requests_a_stop(client_for, run):
    execution = start(run)
    client = client_for("bob")
    client.post(f"/executions/{execution.pk}/cancel")
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.RUNNING and execution.cancel_requested_at
    assert AuditLog.objects.filter(action="execution.cancel", via="ui").count() == 1
    page = page_of(client, run)
    assert ("success", f"Stop requested for execution {execution.name} of run #{run.pk}: its "
            "worker terminates it within a few seconds.") in messages_in(page)
    assert f'action="/executions/{execution.pk}/cancel"' not in page


# --- refusals ----------------------------------------------------------------------------------


def test_cancelling_an_already_cancelled_run_says_why(client_for, run):
    client = client_for("bob")
    client.post(f"/runs/{run.pk}/cancel")
    response = client.post(f"/runs/{run.pk}/cancel", follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(f"/runs/{run.pk}/", 303)]
    assert ("error", f"Run {run.pk} has already ended (cancelled); nothing to cancel.") in (
        messages_in(response.content.decode())
    )
    assert AuditLog.objects.filter(action="run.cancel").count() == 1


@pytest.mark.parametrize(
    ("first", "again", "message"),
    [
        ("pause", "pause", "A run cannot go from 'paused' to"),
        ("cancel", "pause", "A run cannot go from 'cancelled' to"),
        ("cancel", "resume", "is cancelled, not paused"),
    ],
)
def test_a_move_not_allowed_is_a_message_not_an_error_page(client_for, run, first, again,
                                                           message):
    client = client_for("bob")
    client.post(f"/runs/{run.pk}/{first}")
    page_of(client, run)  # shows (and so consumes) the first move's message
    before = status_of(run)
    response = client.post(f"/runs/{run.pk}/{again}", follow=True)
    assert response.status_code == 200
    [(level, text)] = messages_in(response.content.decode())
    assert level == "error" and message in text
    assert status_of(run) == before


def test_cancelling_an_ended_execution_says_why(client_for, run):
    execution = run.executions.get()
    client = client_for("bob")
    client.post(f"/runs/{run.pk}/cancel")
    response = client.post(f"/executions/{execution.pk}/cancel", follow=True)
    assert response.status_code == 200
    assert ("error", f"Execution {execution.pk} has already ended (cancelled); nothing to "
            "cancel.") in messages_in(response.content.decode())


@pytest.mark.parametrize("action", ["cancel", "pause", "resume"])
def test_a_viewer_gets_403_and_an_outsider_404(client_for, run, action):
    assert client_for("carol").post(f"/runs/{run.pk}/{action}").status_code == 403
    assert client_for("mallory").post(f"/runs/{run.pk}/{action}").status_code == 404
    assert status_of(run) == RunStatus.QUEUED
    assert not AuditLog.objects.filter(object_type="run").exclude(action="run.launch").exists()


def test_a_viewer_gets_403_and_an_outsider_404_cancelling_an_execution(client_for, run):
    execution = run.executions.get()
    assert client_for("carol").post(f"/executions/{execution.pk}/cancel").status_code == 403
    assert client_for("mallory").post(f"/executions/{execution.pk}/cancel").status_code == 404
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.PENDING


@pytest.mark.parametrize("path", ["/runs/{run}/cancel", "/runs/{run}/pause",
                                  "/runs/{run}/resume", "/executions/{execution}/cancel"])
def test_get_on_a_control_is_405(client_for, run, path):
    url = path.format(run=run.pk, execution=run.executions.get().pk)
    assert client_for("bob").get(url).status_code == 405
    assert Client().get(url).status_code == 405
    assert status_of(run) == RunStatus.QUEUED


def test_a_control_needs_login(run):
    response = Client().post(f"/runs/{run.pk}/cancel")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert status_of(run) == RunStatus.QUEUED


def test_a_control_without_the_csrf_token_is_refused(client_for, run):
    client = client_for("bob", enforce_csrf_checks=True)
    assert client.post(f"/runs/{run.pk}/cancel").status_code == 403
    assert status_of(run) == RunStatus.QUEUED
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"',
                      page_of(client, run)).group(1)
    response = client.post(f"/runs/{run.pk}/cancel", {"csrfmiddlewaretoken": token})
    assert response.status_code == 303
    assert status_of(run) == RunStatus.CANCELLED


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("x" * 121, "The reason is 121 characters long; shorten it to 120 or fewer"),
        ("bad\x00byte", "The reason contains a NUL character"),
    ],
)
def test_a_bad_reason_is_refused_with_a_message(client_for, run, reason, message):
    response = client_for("bob").post(f"/runs/{run.pk}/cancel", {"reason": reason}, follow=True)
    assert response.status_code == 200
    [(level, text)] = messages_in(response.content.decode())
    assert level == "error" and text.startswith(message)
    assert status_of(run) == RunStatus.QUEUED


def test_the_longest_reason_fits_with_the_longest_username(hello_task, project, run):
    # The execution's cancel_reason is varchar(300) holding "cancelled by <user>: <reason>";
    # PostgreSQL refuses a longer value, which would be a 500.
    user = UserFactory(username="u" * 150)
    MembershipFactory(project=project, user=user, role=Role.OPERATOR)
    client = Client()
    client.force_login(user)
    response = client.post(f"/runs/{run.pk}/cancel", {"reason": "r" * 120})
    assert response.status_code == 303
    assert status_of(run) == RunStatus.CANCELLED


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/runs/{run}/cancel", {"reason": ["a", "b"]}),
        ("/runs/{run}/cancel", {"reason": "💥" * 120}),
        ("/runs/{run}/pause", {"reason": "x" * 100000}),
        ("/executions/{execution}/cancel", {"reason": "\x00"}),
        ("/runs/999999999999999999/cancel", {}),
        ("/runs/9999999999999999999/pause", {}),
        ("/executions/999999999999999999/cancel", {}),
    ],
)
def test_no_control_input_causes_a_500(client_for, run, path, data):
    url = path.format(run=run.pk, execution=run.executions.get().pk)
    assert client_for("bob").post(url, data).status_code < 500


# --- with htmx ---------------------------------------------------------------------------------


def test_with_htmx_a_control_sends_the_browser_back_to_the_run_page(client_for, run):
    response = client_for("bob").post(
        f"/runs/{run.pk}/pause",
        headers={"HX-Request": "true", "HX-Current-URL": f"http://testserver/runs/{run.pk}/"},
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/runs/{run.pk}/"
    assert status_of(run) == RunStatus.PAUSED


def test_with_htmx_a_refusal_also_lands_on_the_run_page(client_for, run):
    client = client_for("bob")
    client.post(f"/runs/{run.pk}/cancel")
    response = client.post(f"/runs/{run.pk}/resume", headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == f"/runs/{run.pk}/"
    assert "not paused" in messages_in(page_of(client, run))[-1][1]


def test_with_htmx_a_viewer_gets_403_with_the_reason_on_the_page(client_for, run):
    client = client_for("carol")
    response = client.post(
        f"/runs/{run.pk}/cancel",
        headers={"HX-Request": "true", "HX-Current-URL": f"http://testserver/runs/{run.pk}/"},
    )
    assert response.status_code == 403
    assert response["HX-Redirect"] == f"/runs/{run.pk}/"
    [(level, text)] = messages_in(page_of(client, run))
    assert level == "error" and "needs the operator role" in text
    assert status_of(run) == RunStatus.QUEUED


def test_with_htmx_a_viewer_from_another_site_gets_a_plain_403(client_for, run):
    response = client_for("carol").post(
        f"/runs/{run.pk}/cancel",
        headers={"HX-Request": "true", "HX-Current-URL": "https://elsewhere.example/"},
    )
    assert response.status_code == 403
    assert "HX-Redirect" not in response


# --- the live poll keeps the controls in step ----------------------------------------------------


def live(client: Client, run: Run, shown: str | None) -> str:
    execution = run.executions.get()
    url = f"/runs/{run.pk}/live?events_after=0&log={execution.pk}:0"
    if shown is not None:
        url += f"&shown={shown}"
    response = client.get(url, headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.content.decode()


def test_an_operator_poll_sends_which_controls_are_shown(client_for, run):
    page = page_of(client_for("bob"), run)
    assert 'hx-include="#run-controls-shown"' in page
    assert '<input type="hidden" id="run-controls-shown" name="shown" value="pause-cancel">' in page
    assert 'hx-include' not in page_of(client_for("carol"), run)


def test_the_poll_resends_the_controls_only_when_they_change(client_for, run):
    client = client_for("bob")
    assert 'id="run-controls"' not in live(client, run, "pause-cancel")
    client.post(f"/runs/{run.pk}/pause")
    body = live(client, run, "pause-cancel")
    assert re.search(r'<section id="run-controls"[^>]*hx-swap-oob="true"', body)
    assert f'action="/runs/{run.pk}/resume"' in body
    assert f'action="/runs/{run.pk}/pause"' not in body
    assert 'id="run-controls"' not in live(client, run, "resume-cancel")


def test_the_poll_swaps_the_controls_for_rerun_once_the_run_has_ended(client_for, run):
    client = client_for("bob")
    client.post(f"/runs/{run.pk}/cancel")
    body = live(client, run, "pause-cancel")
    assert re.search(r'<section id="run-controls"[^>]*hx-swap-oob="true"', body)
    assert not CONTROL_FORM.search(body)
    assert f'action="/runs/{run.pk}/rerun"' in body
    assert 'id="run-controls"' not in live(client, run, "rerun")


def test_the_poll_keeps_execution_cancel_in_step(client_for, run):
    execution = start(run)
    client = client_for("bob")
    assert f'action="/executions/{execution.pk}/cancel"' in live(client, run, "pause-cancel")
    client.post(f"/executions/{execution.pk}/cancel")
    body = live(client, run, "pause-cancel")
    assert f'action="/executions/{execution.pk}/cancel"' not in body
    assert ">Cancel requested<" in body


def test_an_operator_run_page_costs_no_extra_queries(client_for, run, django_assert_num_queries):
    # The same count as a viewer's (tests/runs/test_views.py): the controls reuse the role and
    # the executions the page loads anyway.
    client = client_for("bob")
    execution = start(run)
    with django_assert_num_queries(12):
        assert client.get(f"/runs/{run.pk}/").status_code == 200
    with django_assert_num_queries(9):
        client.get(f"/runs/{run.pk}/live?events_after=0&log={execution.pk}:0&shown=none",
                   headers={"HX-Request": "true"})
