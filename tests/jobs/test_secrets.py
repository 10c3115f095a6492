"""A secret parameter's value never appears in stored logs, events, audit rows, API responses
or pages, while the program still receives it."""

from __future__ import annotations

import json
import sys

from django.test import Client

from jobs.dispatch import dispatch
from jobs.tasks import execution_run
from runs.models import AuditLog, Event, LogChunk
from runs.services import run_launch
from runs.transitions import Actor
from tests.factories import TaskFactory

SECRET = "s3cr3t-Value-9f8e7d"


def test_a_secret_never_leaves_the_worker(project, personas, api_for):
    TaskFactory(
        project=project, slug="deploy",
        params_schema=[{"name": "token", "type": "secret"}, {"name": "site", "type": "string"}],
        spec={"argv": [sys.executable, "-c",
                       "import json, os, sys\n"
                       "token = os.environ['SWITCHYARD_PARAM_TOKEN']\n"
                       "print('using', token)\n"
                       "print('again:', token, file=sys.stderr)\n"
                       "json.dump({'len': len(token), 'echo': token}, open('result.json', 'w'))\n"
                       "sys.exit(1)"]},
    )
    response = api_for("bob").post("/api/projects/demo/tasks/deploy/runs",
                                   {"params": {"token": SECRET, "site": "a"}})
    assert response.status_code == 201
    assert SECRET not in response.content.decode()
    run_id = response.json()["id"]
    run = project.runs.get(pk=run_id)
    dispatch()
    execution_run(run.executions.get().pk)
    run.refresh_from_db()
    execution = run.executions.get()
    assert execution.result["len"] == len(SECRET)  # the program did receive it

    stored = [
        "\n".join(LogChunk.objects.values_list("text", flat=True)),
        json.dumps(list(Event.objects.values("message", "data")), default=str),
        json.dumps(list(AuditLog.objects.values("changes")), default=str),
        json.dumps(run.params), run.secret_params, execution.error,
    ]
    for text in stored:
        assert SECRET not in text
    assert "using ********" in stored[0]

    client = api_for("carol")
    for path in [f"/api/runs/{run_id}", f"/api/runs/{run_id}/events",
                 f"/api/executions/{execution.pk}/logs", "/api/runs"]:
        body = client.get(path).content.decode()
        assert SECRET not in body, path
    browser = Client()
    browser.force_login(personas["carol"])
    for path in [f"/runs/{run_id}/", "/runs/", f"/runs/{run_id}/live?events_after=0"]:
        page = browser.get(path)
        assert page.status_code == 200, path
        assert SECRET not in page.content.decode(), path


def test_a_secret_in_the_result_is_masked_too(project):
    task = TaskFactory(
        project=project, params_schema=[{"name": "token", "type": "secret"}],
        spec={"argv": [sys.executable, "-c",
                       "import json, os; json.dump({'t': os.environ['SWITCHYARD_PARAM_TOKEN']},"
                       " open('result.json', 'w'))"]},
    )
    run, _ = run_launch(task=task, raw_params={"token": SECRET},
                        actor=Actor(via="api", label="t"))
    dispatch()
    execution_run(run.executions.get().pk)
    assert SECRET not in json.dumps(run.executions.get().result)
