"""The end-user pages: login, projects, the launch form, the run list and the live run page.

Personas come from tests/conftest.py: alice (maintainer), bob (operator), carol (viewer) of
project `demo`, and mallory, who is in no project.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.utils import timezone

from runs.models import AuditLog, Event, ExecutionStatus, LogChunk, Run, RunStatus, Trigger
from runs.selectors import cursor_encode
from runs.services import run_launch
from runs.transitions import (
    Actor,
    event_append,
    execution_claim,
    execution_finish,
    execution_queue,
    execution_transition,
)
from tests.conftest import PASSWORD
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

LAUNCH = "/p/demo/tasks/hello/launch"


def launch(task, user, *, trigger: str = Trigger.UI, **params) -> Run:
    run, _created = run_launch(
        task=task,
        raw_params=params or {"name": "Ada"},
        actor=Actor(user=user, via="ui", label=user.username),
        trigger=trigger,
    )
    return run


def start(run: Run) -> tuple[int, int]:
    """Queue and claim the run's execution as a worker would; returns (execution id, attempt)."""
    execution = run.executions.get()
    assert execution_queue(execution_id=execution.pk)
    attempt = execution_claim(execution_id=execution.pk, worker="test-worker")
    assert attempt is not None
    return execution.pk, attempt.number


def add_log(execution_id: int, seq: int, text: str, stream: str = "stdout") -> LogChunk:
    return LogChunk.objects.create(
        execution_id=execution_id, attempt=1, seq=seq, stream=stream, text=text,
        line_count=text.count("\n") + 1, created_at=timezone.now(),
    )


def hx(**extra) -> dict:
    return {"HX-Request": "true", **extra}


# --- login, navigation, error pages ------------------------------------------------------------


def test_login_page_renders_and_logs_in(personas):
    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in page.content
    response = client.post("/login/", {"username": "bob", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    assert b"bob" in home.content


def test_the_pages_load_their_assets_from_the_app_itself():
    # htmx is vendored, not fetched from a CDN: every asset a page links is served by the app
    # (the ServeStatic middleware), with validators and a cache lifetime.
    page = Client().get("/login/").content.decode()
    assets = sorted(set(re.findall(r'(?:href|src)="(/static/[^"]+)"', page)))
    assert [a.split("/static/", 1)[1] for a in assets] == [
        "css/features.css", "css/switchyard.css", "favicon.svg", "js/switchyard.js",
        "vendor/htmx.min.js"]
    for url in assets:
        response = Client().get(url)
        assert response.status_code == 200, url
        body = b"".join(response)
        assert int(response["Content-Length"]) == len(body) > 0
        assert response["Cache-Control"].startswith("max-age="), url
        assert response["ETag"] and response["Last-Modified"]
        again = Client().get(url, headers={"If-None-Match": response["ETag"]})
        assert again.status_code == 304
    assert Client().get("/static/vendor/htmx.min.js")["Content-Type"].startswith(
        "text/javascript")


def test_a_wrong_password_says_so(personas):
    response = Client().post("/login/", {"username": "bob", "password": "nope"})
    assert response.status_code == 200
    assert b"notice-error" in response.content


def test_pages_need_login(hello_task):
    response = Client().get("/runs/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_an_expired_session_sends_htmx_polls_to_the_login_page(hello_task):
    response = Client().get("/runs/5/live", headers=hx(**{"HX-Current-URL":
                                                           "http://testserver/runs/5/"}))
    assert response["HX-Redirect"] == "/login/?next=%2Fruns%2F5%2F"


def test_nav_has_a_logout_post_form_and_admin_only_for_staff(client_for, personas):
    page = client_for("bob").get("/").content.decode()
    assert re.search(r'<form method="post" action="/logout/">\s*<input type="hidden" '
                     r'name="csrfmiddlewaretoken"', page)
    assert 'href="/api/docs"' in page
    assert 'href="/admin/"' not in page
    personas["alice"].is_staff = True
    personas["alice"].save()
    assert 'href="/admin/"' in client_for("alice").get("/").content.decode()


def test_logout_logs_out(client_for):
    client = client_for("bob")
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_not_found_page_extends_the_layout(client_for):
    response = client_for("bob").get("/p/nope/")
    assert response.status_code == 404
    assert b"Not found" in response.content
    assert b"Log out" in response.content


def test_a_huge_run_id_is_a_404_not_a_500(client_for):
    assert client_for("bob").get("/runs/99999999999999999999999/").status_code == 404


# --- home and project -----------------------------------------------------------------------


def test_home_lists_projects_with_task_counts_and_recent_runs(client_for, hello_task, personas):
    TaskFactory(project=hello_task.project, slug="other")
    run = launch(hello_task, personas["bob"])
    page = client_for("carol").get("/").content.decode()
    assert "Demo" in page
    assert "2 tasks" in page
    assert "Viewer" in page
    assert f'href="/runs/{run.pk}/"' in page


def test_home_of_an_outsider_shows_no_projects(client_for, hello_task, personas):
    run = launch(hello_task, personas["bob"])
    page = client_for("mallory").get("/").content.decode()
    assert "No projects yet" in page
    assert f'href="/runs/{run.pk}/"' not in page


def test_operator_sees_a_launch_button(client_for, hello_task):
    page = client_for("bob").get("/p/demo/").content.decode()
    assert f'href="{LAUNCH}">Launch' in page


def test_viewer_sees_the_tasks_but_no_launch_button(client_for, hello_task):
    page = client_for("carol").get("/p/demo/").content.decode()
    assert hello_task.name in page
    assert ">Launch<" not in page
    launch_page = client_for("carol").get(LAUNCH).content.decode()
    assert launch_page.count("Launch run") == 0
    assert "<fieldset disabled>" in launch_page


@pytest.mark.parametrize(
    "path",
    ["/p/demo/", LAUNCH, "/runs/{run}/", "/runs/{run}/live?events_after=0",
     "/runs/{run}/executions/{execution}/log.txt"],
)
def test_outsider_gets_404(client_for, hello_task, personas, path):
    run = launch(hello_task, personas["bob"])
    url = path.format(run=run.pk, execution=run.executions.get().pk)
    assert client_for("mallory").get(url).status_code == 404


def test_outsider_posting_a_launch_gets_404(client_for, hello_task):
    assert client_for("mallory").post(LAUNCH, {"name": "Ada"}).status_code == 404
    assert not Run.objects.exists()


# --- launch -----------------------------------------------------------------------------------


def test_launch_form_is_generated_from_the_schema(client_for, project):
    TaskFactory(
        project=project,
        slug="every",
        params_schema=[
            {"name": "name", "type": "string", "required": True, "label": "Your name",
             "help": "Who to greet"},
            {"name": "notes", "type": "text"},
            {"name": "count", "type": "integer", "min": 1, "max": 10, "default": 3},
            {"name": "ratio", "type": "number"},
            {"name": "loud", "type": "boolean", "default": True},
            {"name": "site", "type": "choice", "choices": ["a", "b"], "default": "b"},
            {"name": "token", "type": "secret"},
        ],
    )
    page = client_for("bob").get("/p/demo/tasks/every/launch").content.decode()
    assert re.search(r'<label for="param-name">Your name <span class="required">', page)
    assert 'id="param-name-help">Who to greet<' in page
    assert re.search(r'<textarea id="param-notes" name="notes"', page)
    assert re.search(r'name="count"\s+type="number" step="1"[^>]* min="1" max="10"', page)
    assert re.search(r'name="count".*value="3"', page)
    assert re.search(r'name="ratio"\s+type="number" step="any"', page)
    assert re.search(r'type="checkbox" id="param-loud" name="loud" value="on" checked', page)
    assert '<option value="b" selected>b</option>' in page
    assert re.search(r'name="token"\s+type="password"', page)
    assert "Launch run" in page


def test_launch_with_a_bad_parameter_shows_the_field_error_and_creates_no_run(
    client_for, hello_task
):
    response = client_for("bob").post(LAUNCH, {"name": "Ada", "count": "three"})
    assert response.status_code == 422
    page = response.content.decode()
    assert 'id="param-count-error">Must be a whole number.' in page
    assert 'aria-invalid="true"' in page
    assert 'value="Ada"' in page  # what was typed is kept
    assert not Run.objects.exists()


def test_a_missing_required_parameter_is_reported_on_its_field(client_for, hello_task):
    response = client_for("bob").post(LAUNCH, {"count": "2"})
    assert response.status_code == 422
    assert b'id="param-name-error">This parameter is required.' in response.content


def test_a_typed_secret_is_never_sent_back(client_for, project):
    TaskFactory(project=project, slug="secretive", params_schema=[
        {"name": "token", "type": "secret", "required": True},
        {"name": "count", "type": "integer"},
    ])
    response = client_for("bob").post("/p/demo/tasks/secretive/launch",
                                      {"token": "hunter2-very-secret", "count": "x"})
    assert response.status_code == 422
    assert b"hunter2-very-secret" not in response.content


def test_a_nul_character_is_a_field_error_not_a_500(client_for, hello_task):
    response = client_for("bob").post(LAUNCH, {"name": "A\x00da", "count": "zero"})
    assert response.status_code == 422
    assert b"NUL character" in response.content
    assert b"Must be a whole number" in response.content
    assert not Run.objects.exists()


def test_launch_creates_a_ui_run_and_redirects_to_it(client_for, hello_task):
    client = client_for("bob")
    response = client.post(LAUNCH, {"name": "Ada", "count": "2"},
                           headers={"User-Agent": "pytest-browser"})
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.pk}/"
    assert run.trigger == Trigger.UI
    assert run.params == {"name": "Ada", "count": 2}
    assert run.created_by.username == "bob"
    audit = AuditLog.objects.get(action="run.launch")
    assert (audit.via, audit.actor_label, audit.user_agent) == ("ui", "bob", "pytest-browser")
    detail = client.get(response["Location"]).content.decode()
    assert f"Run #{run.pk} of {hello_task.name} launched." in detail


def test_viewer_posting_a_launch_gets_403_and_no_run(client_for, hello_task):
    response = client_for("carol").post(LAUNCH, {"name": "Ada"})
    assert response.status_code == 403
    assert b"operator" in response.content
    assert not Run.objects.exists()


def test_a_disabled_task_says_so_and_refuses_to_launch(client_for, hello_task):
    hello_task.enabled = False
    hello_task.save()
    page = client_for("bob").get(LAUNCH).content.decode()
    assert "This task is disabled" in page
    assert "Launch run" not in page
    response = client_for("bob").post(LAUNCH, {"name": "Ada"})
    assert response.status_code == 409
    assert b"disabled" in response.content
    assert not Run.objects.exists()


def test_launch_again_prefills_the_form_but_never_secrets(client_for, project, personas):
    task = TaskFactory(project=project, slug="again", params_schema=[
        {"name": "name", "type": "string", "required": True},
        {"name": "loud", "type": "boolean"},
        {"name": "token", "type": "secret"},
    ])
    run = launch(task, personas["bob"], name="Grace", loud=True, token="s3cr3t")
    execution_transition(execution_id=run.executions.get().pk, to=ExecutionStatus.CANCELLED)
    detail = client_for("bob").get(f"/runs/{run.pk}/").content.decode()
    link = re.search(r'href="(/p/demo/tasks/again/launch\?[^"]+)"', detail).group(1)
    assert "token" not in link
    form = client_for("bob").get(link.replace("&amp;", "&")).content.decode()
    assert 'value="Grace"' in form
    assert re.search(r'name="loud" value="on" checked', form)
    assert "s3cr3t" not in form and "****" not in form


# --- run list ---------------------------------------------------------------------------------


def test_run_list_shows_visible_runs_and_filters_them(client_for, hello_task, personas):
    other = TaskFactory(project=hello_task.project, slug="other")
    first = launch(hello_task, personas["bob"])
    second = launch(other, personas["bob"], trigger=Trigger.API)
    execution_transition(execution_id=first.executions.get().pk, to=ExecutionStatus.CANCELLED)
    client = client_for("carol")

    page = client.get("/runs/").content.decode()
    assert f'href="/runs/{first.pk}/"' in page and f'href="/runs/{second.pk}/"' in page

    by_task = client.get("/runs/?task=other").content.decode()
    assert f'href="/runs/{second.pk}/"' in by_task
    assert f'href="/runs/{first.pk}/"' not in by_task

    by_status = client.get("/runs/?status=cancelled").content.decode()
    assert f'href="/runs/{first.pk}/"' in by_status
    assert f'href="/runs/{second.pk}/"' not in by_status

    by_trigger = client.get("/runs/?trigger=api&project=demo").content.decode()
    assert f'href="/runs/{second.pk}/"' in by_trigger
    assert f'href="/runs/{first.pk}/"' not in by_trigger


def test_run_list_hides_other_projects_runs(client_for, hello_task, personas):
    launch(hello_task, personas["bob"])
    page = client_for("mallory").get("/runs/").content.decode()
    assert "No runs match" in page


def test_run_list_counts_runs_per_status(client_for, hello_task, personas):
    launch(hello_task, personas["bob"])
    launch(hello_task, personas["bob"])
    page = client_for("bob").get("/runs/").content.decode()
    assert re.search(r'href="/runs/\?status=queued".*?<span class="chip-count">2</span>', page,
                     re.S)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=exploded", "Status must be one of"),
        ("trigger=telepathy", "Trigger must be one of"),
        ("project=not%20a%20slug", "Project &#x27;not a slug&#x27; is not a valid slug"),
        # Refused at the door (config.middleware) before any view sees it.
        ("task=%00", "query string contains a NUL character"),
        ("cursor=garbage!", "The cursor is not valid"),
        (f"cursor={cursor_encode(10**30)}", "The cursor is not valid"),
    ],
)
def test_run_list_bad_filters_or_cursor_are_a_400_with_a_message(client_for, hello_task,
                                                                  query, message):
    response = client_for("bob").get(f"/runs/?{query}")
    assert response.status_code == 400
    assert message in response.content.decode()


def test_run_list_pages_by_cursor(client_for, hello_task, personas, monkeypatch):
    monkeypatch.setattr("runs.views.RUN_PAGE", 2)
    runs = [launch(hello_task, personas["bob"]) for _ in range(3)]
    client = client_for("bob")
    first = client.get("/runs/").content.decode()
    older = re.search(r'href="(/runs/\?cursor=[^"]+)" rel="next">Older runs', first).group(1)
    assert f'href="/runs/{runs[0].pk}/"' not in first
    second = client.get(older).content.decode()
    assert f'href="/runs/{runs[0].pk}/"' in second
    assert f'href="/runs/{runs[2].pk}/"' not in second
    assert "Older runs" not in second
    assert "Newest runs" in second


def test_run_rows_poll_fast_while_a_run_is_live_and_slowly_once_all_ended(client_for, hello_task,
                                                                          personas):
    run = launch(hello_task, personas["bob"])
    client = client_for("bob")
    page = client.get("/runs/").content.decode()
    assert re.search(r'<tbody id="run-rows" hx-get="/runs/" hx-trigger="every 2s '
                     r"\[document.visibilityState === 'visible'\]", page)

    rows = client.get("/runs/", headers=hx(**{"HX-Target": "run-rows"}))
    assert b"<tbody" in rows.content and b"<html" not in rows.content

    execution_transition(execution_id=run.executions.get().pk, to=ExecutionStatus.CANCELLED)
    rows = client.get("/runs/", headers=hx(**{"HX-Target": "run-rows"})).content.decode()
    assert 'hx-trigger="every 15s' in rows and 'data-poll="slow"' in rows
    assert "Cancelled" in rows


def test_an_older_page_of_ended_runs_does_not_poll(client_for, hello_task, personas,
                                                   monkeypatch):
    monkeypatch.setattr("runs.views.RUN_PAGE", 1)
    for _ in range(2):
        run = launch(hello_task, personas["bob"])
        execution_transition(execution_id=run.executions.get().pk, to=ExecutionStatus.CANCELLED)
    client = client_for("bob")
    older = re.search(r'href="(/runs/\?cursor=[^"]+)" rel="next"',
                      client.get("/runs/").content.decode()).group(1)
    page = client.get(older.replace("&amp;", "&")).content.decode()
    assert '<tbody id="run-rows">' in page


def test_the_rows_poll_refreshes_the_status_counts(client_for, hello_task, personas):
    launch(hello_task, personas["bob"])
    rows = client_for("bob").get("/runs/", headers=hx(**{"HX-Target": "run-rows"})).content
    assert re.search(rb'<ul class="chips" id="status-chips"[^>]*hx-swap-oob="true"', rows)
    assert b'<span class="chip-count">1</span>' in rows


# --- run detail and the live poll ---------------------------------------------------------------


def test_run_detail_shows_status_params_executions_timeline_and_logs(client_for, project,
                                                                     personas):
    task = TaskFactory(project=project, slug="hello", params_schema=[
        {"name": "name", "type": "string"}, {"name": "token", "type": "secret"},
    ])
    run = launch(task, personas["bob"], name="Ada", token="s3cr3t")
    execution_id, attempt = start(run)
    add_log(execution_id, 1, "line one\nline two")
    add_log(execution_id, 2, "oops", stream="stderr")
    execution_finish(execution_id=execution_id, attempt_number=attempt,
                     status=ExecutionStatus.FAILED, exit_code=3, error="boom happened",
                     result={"answer": 42})
    page = client_for("carol").get(f"/runs/{run.pk}/").content.decode()
    assert 'class="badge badge-failed">Failed<' in page
    assert "boom happened" in page  # status reason and the execution's error
    assert "********" in page and "s3cr3t" not in page
    assert '<span class="ln">line one</span><span class="ln">line two</span>' in page
    assert re.search(r'class="chunk s-stderr"[^>]*><span class="ln">oops</span>', page)
    assert "&quot;answer&quot;: 42" in page
    assert "run.queued" in page and "execution.failed" in page
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[^"]+" title="[^"]+ UTC"', page)
    # Ended: the poller is inert.
    assert '<div id="run-poller" class="live-status">' in page
    assert "every 1s" not in page


def test_a_live_run_page_polls_while_the_tab_is_visible(client_for, hello_task, personas):
    run = launch(hello_task, personas["bob"])
    page = client_for("bob").get(f"/runs/{run.pk}/").content.decode()
    execution = run.executions.get()
    assert (f'hx-get="/runs/{run.pk}/live?events_after=1&amp;log={execution.pk}%3A0" '
            "hx-trigger=\"every 1s [document.visibilityState === 'visible']\"") in page


def test_live_poll_returns_new_log_chunks_and_events_after_the_cursors(client_for, hello_task,
                                                                      personas):
    run = launch(hello_task, personas["bob"])
    execution_id, _attempt = start(run)
    add_log(execution_id, 1, "old news")
    add_log(execution_id, 2, "fresh line", stream="stderr")
    add_log(execution_id, 3, "[switchyard] note", stream="system")
    seen = run.events.count() - 1  # the client has every event but the last
    response = client_for("carol").get(
        f"/runs/{run.pk}/live?events_after={seen}&log={execution_id}:1", headers=hx()
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "old news" not in body
    assert f'hx-swap-oob="beforeend:#log-{execution_id}"' in body
    assert "fresh line" in body and "s-stderr" in body and "s-system" in body
    assert 'hx-swap-oob="beforeend:#timeline"' in body
    last = run.events.order_by("-seq").first()
    assert f'id="event-{last.seq}"' in body
    assert f'id="event-{seen}"' not in body
    assert 'id="run-header" class="card run-header" hx-swap-oob="true"' in body
    # The next poller carries the advanced cursors and keeps polling.
    assert f"events_after={last.seq}&amp;log={execution_id}%3A3" in body
    assert "every 1s" in body


def test_live_poll_with_nothing_new_appends_nothing(client_for, hello_task, personas):
    run = launch(hello_task, personas["bob"])
    execution = run.executions.get()
    body = client_for("bob").get(
        f"/runs/{run.pk}/live?events_after={run.events.count()}&log={execution.pk}:0",
        headers=hx(),
    ).content.decode()
    assert "beforeend" not in body
    assert "every 1s" in body


def test_live_poll_stops_once_the_run_has_ended(client_for, hello_task, personas):
    run = launch(hello_task, personas["bob"])
    execution_id, attempt = start(run)
    add_log(execution_id, 1, "done")
    execution_finish(execution_id=execution_id, attempt_number=attempt,
                     status=ExecutionStatus.SUCCEEDED, exit_code=0)
    body = client_for("bob").get(
        f"/runs/{run.pk}/live?events_after=0&log={execution_id}:0", headers=hx()
    ).content.decode()
    assert "done" in body
    assert 'class="badge badge-succeeded">Succeeded<' in body
    poller = re.search(r'<div id="run-poller"[^>]*>', body).group(0)
    assert "hx-trigger" not in poller


def test_live_poll_ignores_cursors_of_other_runs_executions(client_for, hello_task, personas):
    mine = launch(hello_task, personas["bob"])
    theirs = launch(hello_task, personas["bob"])
    other_execution = theirs.executions.get().pk
    add_log(other_execution, 1, "not for this page")
    own_execution = mine.executions.get().pk
    body = client_for("bob").get(
        f"/runs/{mine.pk}/live?events_after=0&log={own_execution}:0&log={other_execution}:0",
        headers=hx(),
    ).content.decode()
    assert "not for this page" not in body


@pytest.mark.parametrize(
    "query",
    ["events_after=-1", "events_after=abc", "events_after=99999999999999999999",
     "log=12", "log=x:1", "log=1:99999999999999"],
)
def test_live_poll_bad_cursors_are_a_400(client_for, hello_task, personas, query):
    run = launch(hello_task, personas["bob"])
    response = client_for("bob").get(f"/runs/{run.pk}/live?{query}", headers=hx())
    assert response.status_code == 400
    assert b"reload the page" in response.content


def test_run_page_shows_the_tail_of_a_long_log(client_for, hello_task, personas, monkeypatch):
    monkeypatch.setattr("runs.run_views.LOG_TAIL_LINES", 3)
    run = launch(hello_task, personas["bob"])
    execution_id, _attempt = start(run)
    add_log(execution_id, 1, "a1\na2")
    add_log(execution_id, 2, "b1\nb2")
    page = client_for("bob").get(f"/runs/{run.pk}/").content.decode()
    assert ">a1<" not in page and ">a2<" in page and ">b2<" in page
    assert "1 earlier line not shown" in page
    # The poll continues after the last chunk, not after the lines shown.
    assert f"log={execution_id}%3A2" in page


def test_the_full_log_downloads_as_text(client_for, hello_task, personas):
    run = launch(hello_task, personas["bob"])
    execution_id, _attempt = start(run)
    add_log(execution_id, 1, "out 1\nout 2")
    add_log(execution_id, 2, "bad", stream="stderr")
    response = client_for("carol").get(f"/runs/{run.pk}/executions/{execution_id}/log.txt")
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert b"".join(response.streaming_content) == b"out 1\nout 2\n[stderr] bad\n"


def test_an_execution_of_another_run_is_a_404_in_the_log_download(client_for, hello_task,
                                                                  personas):
    mine = launch(hello_task, personas["bob"])
    theirs = launch(hello_task, personas["bob"])
    url = f"/runs/{mine.pk}/executions/{theirs.executions.get().pk}/log.txt"
    assert client_for("bob").get(url).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("get", "/runs/?project=" + "x" * 5000, None),
        ("get", "/runs/?cursor=%F0%9F%92%A5&status=%00", None),
        ("get", "/runs/?cursor=" + "A" * 10000, None),
        ("get", "/runs/{run}/live?events_after=" + "9" * 5000, None),
        ("get", "/runs/{run}/live?log=" + "1" * 5000 + ":1", None),
        ("get", "/runs/{run}/live?log=%00:%00&events_after=%F0%9F%92%A5", None),
        ("get", LAUNCH + "?name=%00&count=%F0%9F%92%A5&unknown=1", None),
        ("post", LAUNCH, {"name": "x" * 20000, "count": "9" * 5000}),
        ("post", LAUNCH, {"name": ["a", "b"], "count": "1e400"}),
        ("post", "/p/demo/tasks/" + "t" * 300 + "/launch", {"name": "Ada"}),
    ],
)
def test_no_client_input_causes_a_500(client_for, hello_task, personas, method, path, data):
    run = launch(hello_task, personas["bob"])
    response = getattr(client_for("bob"), method)(path.format(run=run.pk), data)
    assert response.status_code < 500


# --- query counts -------------------------------------------------------------------------------

# session + user, then the page's own reads; pinned so that an N+1 shows up as a failure.


def test_run_list_query_count_does_not_grow_with_rows(client_for, hello_task, personas,
                                                      django_assert_num_queries):
    # session, user, runs, status counts, projects, tasks and people (filter choices), and
    # the worker banner (is a worker alive? how many executions wait?).
    client = client_for("carol")
    for _ in range(5):
        launch(hello_task, personas["bob"])
    with django_assert_num_queries(9):
        assert client.get("/runs/").status_code == 200
    for _ in range(5):
        launch(hello_task, personas["alice"])
    TaskFactory(project=hello_task.project, slug="other")
    with django_assert_num_queries(9):
        assert client.get("/runs/").status_code == 200
    with django_assert_num_queries(4):  # the polled rows: session, user, runs, status counts
        client.get("/runs/", headers=hx(**{"HX-Target": "run-rows"}))


def test_run_detail_query_count_is_fixed(client_for, hello_task, personas,
                                         django_assert_num_queries):
    # session, user, run, role (run_get), executions, attempts, role, log tails, events, and
    # the worker banner's two on the page; the poll draws no banner.
    run = launch(hello_task, personas["bob"])
    execution_id, attempt = start(run)
    for seq in range(1, 6):
        add_log(execution_id, seq, f"line {seq}")
    for n in range(5):
        event_append(run.pk, "note", f"note {n}", now=timezone.now())
    client = client_for("carol")
    # 12: the page's queries, the worker banner's two and the Artifacts section's one.
    with django_assert_num_queries(12):
        assert client.get(f"/runs/{run.pk}/").status_code == 200
    with django_assert_num_queries(9):
        response = client.get(f"/runs/{run.pk}/live?events_after=0&log={execution_id}:0",
                              headers=hx())
        assert response.status_code == 200
    for seq in range(6, 16):
        add_log(execution_id, seq, f"line {seq}")
    for n in range(10):
        event_append(run.pk, "note", f"more {n}", now=timezone.now())
    with django_assert_num_queries(12):
        assert client.get(f"/runs/{run.pk}/").status_code == 200
    with django_assert_num_queries(9):
        client.get(f"/runs/{run.pk}/live?events_after=0&log={execution_id}:0", headers=hx())


def test_events_beyond_the_first_page_keep_the_poller_going(client_for, hello_task, personas,
                                                            monkeypatch):
    monkeypatch.setattr("runs.run_views.FULL_EVENTS", 2)
    run = launch(hello_task, personas["bob"])
    execution_transition(execution_id=run.executions.get().pk, to=ExecutionStatus.CANCELLED)
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    assert Event.objects.filter(run=run).count() > 2
    page = client_for("bob").get(f"/runs/{run.pk}/").content.decode()
    assert "every 1s" in page


def test_the_500_page_renders_without_a_request_context():
    from django.template import loader

    html = loader.get_template("500.html").render()
    assert "Something went wrong on our side" in html
    assert "Log out" not in html


def test_a_waiting_execution_says_why(client_for, hello_task, personas):
    run = launch(hello_task, personas["bob"])  # nothing dispatches it: no worker in this test
    page = client_for("carol").get(f"/runs/{run.pk}/").content.decode()
    assert re.search(r'class="notice notice-warning waiting-reason"[^>]*>No worker alive', page)
