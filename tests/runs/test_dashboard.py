"""The dashboard (runs.views.home) and the no-worker banner every page carries
(runs.context_processors).

Personas come from tests/conftest.py: alice (maintainer), bob (operator), carol (viewer) of
project `demo`, and mallory, who is in no project.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from jobs.models import WorkerProcess
from runs.models import ExecutionStatus, Role, Run, Trigger
from runs.services import run_launch
from runs.transitions import (
    Actor,
    execution_claim,
    execution_finish,
    execution_queue,
    execution_transition,
)
from tests.factories import MembershipFactory, ProjectFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}


def launch(task, user, **params) -> Run:
    if not params and any(d["name"] == "name" for d in task.params_schema):
        params = {"name": "Ada"}
    run, _ = run_launch(task=task, raw_params=params,
                        actor=Actor(user=user, via="ui", label=user.username),
                        trigger=Trigger.UI)
    return run


def finish(run: Run, status: str = ExecutionStatus.SUCCEEDED) -> None:
    execution = run.executions.get()
    assert execution_queue(execution_id=execution.pk)
    attempt = execution_claim(execution_id=execution.pk, worker="w:1")
    execution_finish(execution_id=execution.pk, attempt_number=attempt.number, status=status,
                     exit_code=0 if status == ExecutionStatus.SUCCEEDED else 1)


def gate_task(project, role: str = "operator"):
    return TaskFactory(project=project, slug=f"gate-{role}", name=f"Gate {role}",
                       kind="pipeline", params_schema=[],
                       spec={"stages": [{"name": "ship", "approval": {"role": role},
                                         "steps": [{"name": "go", "command": ["true"]}]}]})


def tile(page: str, label: str) -> int:
    found = re.search(r'<span class="tile-value">(\d+)</span> <span class="tile-label">'
                      rf'<span aria-hidden="true">[^<]*</span>{re.escape(label)}</span>', page)
    assert found, f"no tile {label!r}"
    return int(found.group(1))


def alive_worker() -> WorkerProcess:
    now = timezone.now()
    return WorkerProcess.objects.create(name="w:1", host="h", pid=1, started_at=now,
                                        last_seen_at=now)


# --- the dashboard ------------------------------------------------------------------------------


def test_the_dashboard_counts_runs_by_what_they_are_doing(client_for, hello_task, personas):
    bob = personas["bob"]
    running = launch(hello_task, bob)
    execution_queue(execution_id=running.executions.get().pk)
    execution_claim(execution_id=running.executions.get().pk, worker="w:1")
    launch(hello_task, bob)  # queued
    finish(launch(hello_task, bob), ExecutionStatus.FAILED)
    finish(launch(hello_task, bob))
    finish(launch(hello_task, bob))
    old = launch(hello_task, bob)
    finish(old, ExecutionStatus.FAILED)
    Run.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=2))
    page = client_for("carol").get("/").content.decode()
    assert tile(page, "Running now") == 1
    assert tile(page, "Queued") == 1
    assert tile(page, "Waiting for approval") == 0
    assert tile(page, "Failed or timed out, last 24 h") == 1  # not the one from two days ago
    assert tile(page, "Succeeded, last 24 h") == 2
    assert 'href="/runs/?status=running"' in page


def test_the_dashboard_lists_the_approvals_the_viewer_may_decide(client_for, project, personas):
    operator_gate = launch(gate_task(project, "operator"), personas["alice"])
    maintainer_gate = launch(gate_task(project, "maintainer"), personas["alice"])
    bob = client_for("bob").get("/").content.decode()
    assert f"#execution-{operator_gate.executions.get().pk}" in bob
    assert f"#execution-{maintainer_gate.executions.get().pk}" not in bob
    assert "Waiting for your approval" in bob
    alice = client_for("alice").get("/").content.decode()
    assert f"#execution-{maintainer_gate.executions.get().pk}" in alice
    carol = client_for("carol").get("/").content.decode()
    assert "Waiting for your approval" not in carol  # a viewer decides nothing
    assert tile(carol, "Waiting for approval") == 2


def test_mine_shows_only_the_viewers_own_runs(client_for, hello_task, personas):
    own = launch(hello_task, personas["bob"])
    other = launch(hello_task, personas["alice"])
    client = client_for("bob")
    everyone = client.get("/").content.decode()
    assert f'href="/runs/{own.pk}/"' in everyone and f'href="/runs/{other.pk}/"' in everyone
    mine = client.get("/?runs=mine").content.decode()
    assert f'href="/runs/{own.pk}/"' in mine and f'href="/runs/{other.pk}/"' not in mine
    assert "Your latest runs" in mine
    rows = client.get("/?runs=mine", headers={**HX, "HX-Target": "run-rows"}).content.decode()
    assert rows.lstrip().startswith("<tbody") and f'href="/runs/{other.pk}/"' not in rows


def test_the_rows_poll_refreshes_the_figures(client_for, hello_task, personas):
    launch(hello_task, personas["bob"])
    rows = client_for("carol").get("/", headers={**HX, "HX-Target": "run-rows"}).content
    body = rows.decode()
    assert re.search(r'<ul class="tiles" id="tiles"[^>]*hx-swap-oob="true"', body)
    assert tile(body, "Queued") == 1


def test_the_dashboard_of_an_outsider_shows_nothing_of_the_projects(client_for, hello_task,
                                                                    personas):
    run = launch(hello_task, personas["bob"])
    page = client_for("mallory").get("/").content.decode()
    assert "No projects yet" in page
    assert f"/runs/{run.pk}/" not in page
    assert "tile-value" not in page


def test_an_unknown_runs_value_shows_all_runs(client_for, hello_task, personas):
    run = launch(hello_task, personas["alice"])
    page = client_for("bob").get("/?runs=%F0%9F%92%A5").content.decode()
    assert f'href="/runs/{run.pk}/"' in page


def test_the_dashboard_query_count_does_not_grow(client_for, project, hello_task, personas,
                                                 django_assert_num_queries):
    # session, user, runs, projects, tallies, approvals (and the roles they need), and the
    # worker banner (is a worker alive? how many executions wait?).
    def more(n: int) -> None:
        for _ in range(n):
            launch(hello_task, personas["bob"])
            other = ProjectFactory()
            MembershipFactory(project=other, user=personas["bob"], role=Role.OPERATOR)
            TaskFactory(project=other)
            launch(gate_task(other), personas["alice"])

    client = client_for("bob")
    more(2)
    with django_assert_num_queries(9):
        assert client.get("/").status_code == 200
    more(4)
    with django_assert_num_queries(9):
        assert client.get("/").status_code == 200
    with django_assert_num_queries(4):  # the polled rows: session, user, runs, tallies
        client.get("/", headers={**HX, "HX-Target": "run-rows"})


# --- the no-worker banner -----------------------------------------------------------------------


def test_the_banner_shows_while_executions_wait_and_no_worker_is_alive(client_for, hello_task,
                                                                       personas):
    launch(hello_task, personas["bob"])
    launch(hello_task, personas["bob"])
    for path in ("/", "/runs/", "/p/demo/", "/account/"):
        page = client_for("carol").get(path).content.decode()
        assert "No worker is running.</strong> 2 executions are waiting" in page, path
        assert "Tell whoever runs Switchyard" in page
        assert 'hx-get="/status/worker-banner"' in page


def test_staff_are_told_how_to_start_a_worker(client_for, hello_task, personas):
    launch(hello_task, personas["bob"])
    personas["alice"].is_staff = True
    personas["alice"].save()
    page = client_for("alice").get("/").content.decode()
    assert "<code>manage.py qcluster</code>" in page


def test_no_banner_while_a_worker_is_alive(client_for, hello_task, personas):
    launch(hello_task, personas["bob"])
    alive_worker()
    page = client_for("carol").get("/").content.decode()
    assert '<div id="worker-banner"></div>' in page


def test_no_banner_when_nothing_waits(client_for, hello_task, personas):
    run = launch(hello_task, personas["bob"])
    execution_transition(execution_id=run.executions.get().pk, to=ExecutionStatus.CANCELLED)
    paused = launch(hello_task, personas["bob"])
    from runs.transitions import run_pause

    run_pause(run_id=paused.pk, actor=Actor(via="api", label="bob"))  # paused: not waiting
    assert '<div id="worker-banner"></div>' in client_for("carol").get("/").content.decode()


def test_the_banner_counts_only_the_viewers_projects(client_for, hello_task, personas):
    elsewhere = ProjectFactory()
    other_task = TaskFactory(project=elsewhere)
    stranger = UserFactory()
    MembershipFactory(project=elsewhere, user=stranger, role=Role.OPERATOR)
    launch(other_task, stranger)
    assert '<div id="worker-banner"></div>' in client_for("carol").get("/").content.decode()
    launch(hello_task, personas["bob"])
    page = client_for("carol").get("/").content.decode()
    assert "1 execution is waiting" in page


def test_the_banner_poll_returns_the_banner_alone_and_empty_once_a_worker_lives(
        client_for, hello_task, personas):
    launch(hello_task, personas["bob"])
    client = client_for("carol")
    body = client.get("/status/worker-banner", headers=HX).content.decode()
    assert "<html" not in body and "No worker is running" in body
    alive_worker()
    body = client.get("/status/worker-banner", headers=HX).content.decode()
    assert '<div id="worker-banner"></div>' in body


def test_the_banner_poll_needs_login(hello_task):
    response = Client().get("/status/worker-banner", headers=HX)
    assert response.status_code == 200 and response["HX-Redirect"].startswith("/login/")


def test_whether_a_worker_lives_is_cached_briefly(client_for, hello_task, personas, settings,
                                                  django_assert_num_queries):
    from django.core.cache import cache

    from runs.selectors import WORKERS_ALIVE_KEY, workers_alive_any

    settings.SWITCHYARD_WORKER_STATUS_CACHE_SECONDS = 5
    cache.delete(WORKERS_ALIVE_KEY)
    alive_worker()
    with django_assert_num_queries(1):
        assert workers_alive_any()
    with django_assert_num_queries(0):
        assert workers_alive_any()
    cache.delete(WORKERS_ALIVE_KEY)
