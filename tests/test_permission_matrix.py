"""Every API operation for each role (alice maintainer, bob operator, carol viewer) and an
outsider (mallory): the status each one gets. Outsiders never learn that a project's objects
exist (404); members below the needed role get 403. The table must cover every operation in
the OpenAPI document, so a new endpoint cannot ship without a row here."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.test import Client

from jobs.dispatch import dispatch
from runs.models import Execution, Run
from runs.services import run_launch
from runs.transitions import Actor, execution_claim, execution_finish
from tests.factories import TaskFactory

ACTOR = Actor(via="api", label="setup")


@pytest.fixture(autouse=True)
def _local_webhooks(settings):
    # Webhook endpoints here point at 127.0.0.1 (nothing listens; nothing is sent).
    settings.SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE = True


def queued_run(ctx) -> Run:
    return run_launch(task=ctx["task"], raw_params={"name": "x"}, actor=ACTOR)[0]


def failed_run(ctx) -> Run:
    run = queued_run(ctx)
    dispatch()
    execution = run.executions.get()
    attempt = execution_claim(execution_id=execution.pk, worker="w:1")
    execution_finish(execution_id=execution.pk, attempt_number=attempt.number,
                     status="failed", exit_code=1, error="boom")
    return run


def gate(ctx) -> Execution:
    pipeline = TaskFactory(project=ctx["project"], kind="pipeline", params_schema=[],
                           spec={"stages": [{"name": "ship", "approval": {"role": "operator"},
                                             "steps": [{"name": "s", "command": ["true"]}]}]})
    run = run_launch(task=pipeline, raw_params={}, actor=ACTOR)[0]
    return run.executions.get(status="waiting_approval")


def artifact(ctx) -> int:
    """A stored file of a finished run, compared with a baseline image."""
    from django.core.files.base import ContentFile
    from django.utils import timezone

    from artifacts.models import Artifact, Comparison
    from artifacts.storage import artifact_storage

    run = failed_run(ctx)
    storage = artifact_storage()
    key = storage.save(f"p{run.project_id}/r{run.pk}/x/shot.png", ContentFile(b"\x89PNG"))
    made = Artifact.objects.create(run=run, execution=run.executions.get(), attempt=1,
                                   name="shot.png", size=5, sha256="0" * 64,
                                   content_type="image/png", storage_key=key,
                                   created_at=timezone.now())
    diff = storage.save(f"p{run.project_id}/r{run.pk}/compare/diff.png", ContentFile(b"d"))
    Comparison.objects.create(artifact=made, ratio=0.5, level="major", diff_key=diff,
                              created_at=timezone.now())
    return made.pk


def compare_ready(ctx) -> Run:
    from artifacts.services import baseline_set

    baseline = failed_run(ctx)
    baseline.refresh_from_db()
    baseline_set(baseline, actor=ACTOR)
    return failed_run(ctx)


def schedule(ctx) -> int:
    from runs.schedules import schedule_create

    ctx["n"] = ctx.get("n", 0) + 1
    return schedule_create(task=ctx["task"], data={"name": f"s{ctx['n']}", "cron": "0 * * * *",
                                                   "params": {"name": "x"}}, actor=ACTOR).pk


# (method, path template, body, setup, {persona: expected status})
ALL_OK = {"alice": 200, "bob": 200, "carol": 200, "mallory": 404}
LIST_OK = {"alice": 200, "bob": 200, "carol": 200, "mallory": 200}
OPERATOR = {"alice": 200, "bob": 200, "carol": 403, "mallory": 404}
MAINTAINER = {"alice": 200, "bob": 403, "carol": 403, "mallory": 404}


def _new_task_slug(ctx):
    ctx["n"] = ctx.get("n", 0) + 1
    return {"slug": f"new-{ctx['n']}", "name": "New", "spec": {"argv": ["true"]}}


def webhook(ctx) -> int:
    from hooks.services import webhook_endpoint_create

    return webhook_endpoint_create(project=ctx["project"], url="http://127.0.0.1:9/hooks",
                                   events=[], actor=ACTOR)[0].pk


def webhook_delivery(ctx) -> int:
    from hooks.models import WebhookDelivery

    webhook(ctx)
    return WebhookDelivery.objects.filter(run=queued_run(ctx)).latest("id").pk


ROWS: list[tuple[str, str, Callable | dict | None, Callable | None, dict]] = [
    ("GET", "/api/projects", None, None, LIST_OK),
    ("GET", "/api/projects/demo", None, None, ALL_OK),
    ("GET", "/api/projects/demo/members", None, None, ALL_OK),
    ("POST", "/api/projects/demo/members", {"username": "dave"}, None,
     {**MAINTAINER, "alice": 201}),
    ("PATCH", "/api/projects/demo/members/carol", {"role": "viewer"}, None, MAINTAINER),
    ("DELETE", "/api/projects/demo/members/{member}", None,
     lambda ctx: {"member": ctx["extra_member"]()}, {**MAINTAINER, "alice": 204}),
    ("GET", "/api/projects/demo/tasks", None, None, ALL_OK),
    ("GET", "/api/projects/demo/tasks/hello", None, None, ALL_OK),
    ("POST", "/api/projects/demo/tasks", _new_task_slug, None, {**MAINTAINER, "alice": 201}),
    ("PATCH", "/api/projects/demo/tasks/hello", {"description": "d"}, None, MAINTAINER),
    ("DELETE", "/api/projects/demo/tasks/{task}", None,
     lambda ctx: {"task": TaskFactory(project=ctx["project"]).slug},
     {**MAINTAINER, "alice": 204}),
    ("POST", "/api/projects/demo/tasks/hello/runs", {"params": {"name": "x"}}, None,
     {**OPERATOR, "alice": 201, "bob": 201}),
    ("GET", "/api/runs", None, None, LIST_OK),
    ("GET", "/api/runs/{run}", None, lambda ctx: {"run": queued_run(ctx).pk}, ALL_OK),
    ("GET", "/api/runs/{run}/events", None, lambda ctx: {"run": queued_run(ctx).pk}, ALL_OK),
    ("GET", "/api/executions/{execution}/logs", None,
     lambda ctx: {"execution": queued_run(ctx).executions.get().pk}, ALL_OK),
    ("GET", "/api/runs/{run}/events/stream", None, lambda ctx: {"run": queued_run(ctx).pk},
     ALL_OK),
    ("GET", "/api/executions/{execution}/logs/stream", None,
     lambda ctx: {"execution": queued_run(ctx).executions.get().pk}, ALL_OK),
    ("POST", "/api/runs/{run}/cancel", {}, lambda ctx: {"run": queued_run(ctx).pk}, OPERATOR),
    ("POST", "/api/runs/{run}/pause", {}, lambda ctx: {"run": queued_run(ctx).pk}, OPERATOR),
    ("POST", "/api/runs/{run}/resume", {}, lambda ctx: {"run": _paused(ctx).pk}, OPERATOR),
    ("POST", "/api/runs/{run}/rerun", {"mode": "failed"},
     lambda ctx: {"run": failed_run(ctx).pk}, {**OPERATOR, "alice": 201, "bob": 201}),
    ("POST", "/api/executions/{execution}/cancel", {},
     lambda ctx: {"execution": queued_run(ctx).executions.get().pk}, OPERATOR),
    ("POST", "/api/executions/{execution}/approve", {},
     lambda ctx: {"execution": gate(ctx).pk}, OPERATOR),
    ("POST", "/api/executions/{execution}/reject", {},
     lambda ctx: {"execution": gate(ctx).pk}, OPERATOR),
    ("GET", "/api/workers", None, None, LIST_OK),
    ("GET", "/api/tokens", None, None, LIST_OK),
    ("POST", "/api/tokens", {"name": "t"}, None,
     {"alice": 201, "bob": 201, "carol": 201, "mallory": 201}),
    ("DELETE", "/api/tokens/{token}", None, lambda ctx: {"token": ctx["own_token"]()},
     {"alice": 204, "bob": 204, "carol": 204, "mallory": 204}),
    ("POST", "/api/projects/demo/webhooks",
     {"url": "https://93.184.216.34/hooks", "events": ["run.failed"]}, None,
     {**MAINTAINER, "alice": 201}),
    ("GET", "/api/projects/demo/webhooks", None, None, ALL_OK),
    ("GET", "/api/webhooks/{webhook}", None, lambda ctx: {"webhook": webhook(ctx)}, ALL_OK),
    ("PATCH", "/api/webhooks/{webhook}", {"description": "d"},
     lambda ctx: {"webhook": webhook(ctx)}, MAINTAINER),
    ("DELETE", "/api/webhooks/{webhook}", None, lambda ctx: {"webhook": webhook(ctx)},
     {**MAINTAINER, "alice": 204}),
    ("POST", "/api/webhooks/{webhook}/rotate", None, lambda ctx: {"webhook": webhook(ctx)},
     MAINTAINER),
    ("GET", "/api/webhooks/{webhook}/deliveries", None, lambda ctx: {"webhook": webhook(ctx)},
     ALL_OK),
    ("GET", "/api/deliveries/{delivery}", None,
     lambda ctx: {"delivery": webhook_delivery(ctx)}, ALL_OK),
    ("POST", "/api/deliveries/{delivery}/redeliver", None,
     lambda ctx: {"delivery": webhook_delivery(ctx)}, {**OPERATOR, "alice": 201, "bob": 201}),
    ("GET", "/api/runs/{run}/artifacts", None, lambda ctx: {"run": failed_run(ctx).pk}, ALL_OK),
    ("GET", "/api/artifacts/{artifact}", None, lambda ctx: {"artifact": artifact(ctx)}, ALL_OK),
    ("GET", "/api/artifacts/{artifact}/download", None,
     lambda ctx: {"artifact": artifact(ctx)}, ALL_OK),
    ("GET", "/api/artifacts/{artifact}/comparison/diff", None,
     lambda ctx: {"artifact": artifact(ctx)}, ALL_OK),
    ("POST", "/api/runs/{run}/baseline", None, lambda ctx: {"run": failed_run(ctx).pk},
     OPERATOR),
    ("DELETE", "/api/projects/demo/tasks/hello/baseline", None, None, OPERATOR),
    ("POST", "/api/runs/{run}/compare", None, lambda ctx: {"run": compare_ready(ctx).pk},
     OPERATOR),
    ("DELETE", "/api/runs/{run}", None, lambda ctx: {"run": failed_run(ctx).pk},
     {**MAINTAINER, "alice": 204}),
    ("GET", "/api/projects/demo/schedules", None, None, ALL_OK),
    ("POST", "/api/projects/demo/tasks/hello/schedules",
     {"name": "nightly", "cron": "0 3 * * *", "params": {"name": "n"}}, None,
     {**MAINTAINER, "alice": 201}),
    ("GET", "/api/schedules/{schedule}", None, lambda ctx: {"schedule": schedule(ctx)}, ALL_OK),
    ("PATCH", "/api/schedules/{schedule}", {"enabled": False},
     lambda ctx: {"schedule": schedule(ctx)}, MAINTAINER),
    ("DELETE", "/api/schedules/{schedule}", None, lambda ctx: {"schedule": schedule(ctx)},
     {**MAINTAINER, "alice": 204}),
]


def _paused(ctx) -> Run:
    from runs.transitions import run_pause

    run = queued_run(ctx)
    run_pause(run_id=run.pk, actor=ACTOR)
    return run


def test_the_matrix_covers_every_operation_in_the_openapi_document(db):
    import re

    spec = json.loads(Client().get("/api/openapi.json").content)
    missing = []
    for path, operations in spec["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
        for method in operations:
            if not any(m == method.upper() and pattern.match(p) for m, p, *_ in ROWS):
                missing.append(f"{method.upper()} {path}")
    assert missing == [], "operations without a row in the permission matrix"


@pytest.mark.parametrize("persona", ["alice", "bob", "carol", "mallory"])
@pytest.mark.parametrize(("method", "path", "body", "setup", "expected"), ROWS,
                         ids=[f"{m} {p}" for m, p, *_ in ROWS])
def test_each_role_gets_the_expected_status(api_for, personas, project, hello_task, persona,
                                             method, path, body, setup, expected):
    from runs.models import Membership, Role
    from runs.services import api_token_create
    from tests.factories import UserFactory

    client = api_for(persona)

    def extra_member() -> str:
        user = UserFactory()
        Membership.objects.create(project=project, user=user, role=Role.VIEWER)
        return user.username

    def own_token() -> int:
        return api_token_create(user=personas[persona], name="victim")[0].pk

    UserFactory(username="dave")
    ctx = {"project": project, "task": hello_task, "extra_member": extra_member,
           "own_token": own_token}
    url = path.format(**(setup(ctx) if setup else {}))
    payload = body(ctx) if callable(body) else body
    data = json.dumps(payload) if payload is not None else None
    response = getattr(client.client, method.lower())(
        url, data=data, content_type="application/json", headers=client.headers)
    assert response.status_code == expected[persona], response.content[:300]
