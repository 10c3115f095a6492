"""The run page's newer parts (tests/runs/test_views.py has the rest): the retry countdown
("attempt 2 of 3, next try in 4 min"), the log's follow/pause and download, and "launch again"
from a run. Plus the launch form's constraint hints and error summary.

Personas come from tests/conftest.py: alice (maintainer), bob (operator), carol (viewer) of
project `demo`, and mallory, who is in no project.
"""

from __future__ import annotations

import html
import re

import pytest
import time_machine
from django.utils import timezone

from runs.models import ExecutionStatus, Run, Trigger
from runs.services import run_launch
from runs.transitions import Actor, execution_claim, execution_finish, execution_queue
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}


def launch(task, user, **params) -> Run:
    run, _ = run_launch(task=task, raw_params=params or {"name": "Ada"},
                        actor=Actor(user=user, via="ui", label=user.username),
                        trigger=Trigger.UI)
    return run


def fail_once(run: Run) -> None:
    execution = run.executions.get()
    assert execution_queue(execution_id=execution.pk)
    attempt = execution_claim(execution_id=execution.pk, worker="w:1")
    execution_finish(execution_id=execution.pk, attempt_number=attempt.number,
                     status=ExecutionStatus.FAILED, exit_code=1, outcome="failure",
                     error="flaky")


@pytest.fixture
def retrying(project):
    return TaskFactory(project=project, slug="flaky", name="Flaky", max_attempts=3,
                       retry_backoff=[240, 600])


def test_a_failed_attempt_with_tries_left_counts_down_to_the_next(client_for, retrying,
                                                                   personas):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        run = launch(retrying, personas["bob"])
        fail_once(run)
    execution = run.executions.get()
    assert execution.status == ExecutionStatus.PENDING and execution.attempt == 1
    client = client_for("carol")
    with time_machine.travel(start + timezone.timedelta(seconds=10), tick=False):
        page = client.get(f"/runs/{run.pk}/").content.decode()
    assert ("Attempt 1 of 3 did not succeed (failure): attempt 2 of 3, next try in 3 min 50 s."
            in html.unescape(page))
    assert "<dt>Next try</dt><dd>in 3 min 50 s" in page
    assert "retry 2 of 3 at" not in page  # the stored absolute text gives way to the countdown
    # The poll keeps it current.
    with time_machine.travel(start + timezone.timedelta(seconds=200), tick=False):
        body = client.get(f"/runs/{run.pk}/live?events_after=0&log={execution.pk}:0",
                          headers=HX).content.decode()
    assert "next try in 40 s" in body


def test_the_countdown_goes_once_the_retry_is_due(client_for, retrying, personas):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        run = launch(retrying, personas["bob"])
        fail_once(run)
    with time_machine.travel(start + timezone.timedelta(seconds=300), tick=False):
        page = client_for("carol").get(f"/runs/{run.pk}/").content.decode()
    assert "next try in" not in page
    # Due, and nothing will take it: say so.
    assert ("Retry due: attempt 2 of 3 starts when a worker takes it; no worker alive" in
            html.unescape(page))


def test_the_log_has_follow_and_jump_to_end_for_script_and_a_download(client_for, hello_task,
                                                                      personas):
    run = launch(hello_task, personas["bob"])
    execution = run.executions.get()
    page = client_for("carol").get(f"/runs/{run.pk}/").content.decode()
    assert re.search(rf'<span class="log-tools" data-log="log-{execution.pk}" hidden>', page)
    assert f'aria-pressed="true" aria-controls="log-{execution.pk}">Follow</button>' in page
    assert f'href="/runs/{run.pk}/executions/{execution.pk}/log.txt?download=1" download' in page
    download = client_for("carol").get(
        f"/runs/{run.pk}/executions/{execution.pk}/log.txt?download=1")
    assert download["Content-Disposition"] == f'attachment; filename="run-{run.pk}-hello.log"'
    inline = client_for("carol").get(f"/runs/{run.pk}/executions/{execution.pk}/log.txt")
    assert inline["Content-Disposition"].startswith("inline;")


def test_operators_may_launch_again_while_a_run_goes_on(client_for, hello_task, personas):
    run = launch(hello_task, personas["bob"], name="Grace")
    page = client_for("bob").get(f"/runs/{run.pk}/").content.decode()
    link = html.unescape(re.search(r'href="([^"]+)">Launch again with these parameters',
                                   page).group(1))
    assert link.startswith("/p/demo/tasks/hello/launch?") and f"from-run={run.pk}" in link
    assert "Launch again" not in client_for("carol").get(f"/runs/{run.pk}/").content.decode()
    form = client_for("bob").get(link).content.decode()
    assert f'Parameters copied from <a href="/runs/{run.pk}/">run #{run.pk}</a>' in form
    assert 'value="Grace"' in form


def test_launch_again_says_secrets_must_be_entered_again(client_for, project, personas):
    task = TaskFactory(project=project, slug="sec", params_schema=[
        {"name": "name", "type": "string"}, {"name": "token", "type": "secret"}])
    run = launch(task, personas["bob"], name="Ada", token="s3cr3t")
    form = client_for("bob").get(f"/p/demo/tasks/sec/launch?name=Ada&from-run={run.pk}")
    page = form.content.decode()
    assert "Secret parameters are never copied: enter them again." in page
    assert "s3cr3t" not in page


@pytest.mark.parametrize("value", ["abc", "-1", "9" * 30, "%00", ""])
def test_a_bad_from_run_is_ignored(client_for, hello_task, value):
    response = client_for("bob").get(f"/p/demo/tasks/hello/launch?name=Ada&from-run={value}")
    assert response.status_code in (200, 400)
    assert "Parameters copied from" not in response.content.decode()


# --- the launch form ------------------------------------------------------------------------


def test_the_launch_form_states_each_parameters_constraints(client_for, project):
    TaskFactory(project=project, slug="rules", params_schema=[
        {"name": "count", "type": "integer", "min": 1, "max": 10, "default": 2},
        {"name": "ratio", "type": "number", "min": 0},
        {"name": "code", "type": "string", "min_length": 2, "max_length": 8,
         "regex": "[A-Z]+", "help": "An upper-case code."},
        {"name": "site", "type": "choice", "choices": ["a", "b"], "default": "b"},
    ])
    page = client_for("bob").get("/p/demo/tasks/rules/launch").content.decode()
    assert 'id="param-count-help"><span class="hints">From 1 to 10, default 2.</span>' in page
    assert 'id="param-ratio-help"><span class="hints">At least 0.</span>' in page
    assert ('id="param-code-help">An upper-case code. <span class="hints">2 to 8 characters.'
            '</span> <span class="hints">Must match <code>[A-Z]+</code>.</span>') in page
    assert 'id="param-site-help"><span class="hints">Default b.</span>' in page
    assert re.search(r'id="param-count"[^>]*aria-describedby="param-count-help"', page)


def test_the_error_summary_links_each_problem_to_its_field(client_for, hello_task):
    response = client_for("bob").post("/p/demo/tasks/hello/launch", {"count": "99"})
    assert response.status_code == 422
    page = html.unescape(response.content.decode())
    assert '<div class="notice notice-error error-summary" role="alert" tabindex="-1" ' \
           'id="form-error"' in page
    assert '<a href="#param-name">Name: this parameter is required</a>' in page
    assert '<a href="#param-count">Count: must be at most 10</a>' in page
    # The form posts to the launch URL itself, so a followed link's #fragment never sticks.
    assert '<form method="post" action="/p/demo/tasks/hello/launch"' in page


def test_the_launch_page_shows_the_retry_policy(client_for, retrying):
    page = client_for("bob").get("/p/demo/tasks/flaky/launch").content.decode()
    assert "Up to 3 tries, waiting 4 min, 10 min between them" in page


def test_an_execution_waiting_for_a_slot_says_who_holds_it(client_for, project, personas):
    from jobs.dispatch import dispatch

    task = TaskFactory(project=project, slug="site", params_schema=[
        {"name": "site", "type": "string"}], concurrency_key="site:{{ site }}",
        concurrency_limit=1)
    first = launch(task, personas["bob"], site="a")
    second = launch(task, personas["bob"], site="a")
    dispatch()
    page = client_for("carol").get(f"/runs/{second.pk}/").content.decode()
    assert (f"Waiting for slot site:a (limit 1), held by run {first.pk}; no worker alive"
            in html.unescape(page))
