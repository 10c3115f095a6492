"""Regression: attempts still running are a gauge, not an outcome of the counter."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db


def _running(text):
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == "switchyard_attempts_total" and s.labels.get("outcome") == "running":
                return s.value
    return None


def test_attempt_counters_never_go_down(client: Client, settings, project, hello_task):
    from jobs.dispatch import dispatch
    from runs.services import run_launch
    from runs.transitions import Actor, execution_claim, execution_finish

    settings.SWITCHYARD_METRICS_TOKEN = "t"
    run, _ = run_launch(task=hello_task, raw_params={"name": "a"}, actor=Actor(via="api", label="t"))
    dispatch()
    ex = run.executions.get()
    attempt = execution_claim(execution_id=ex.pk, worker="w1")
    before = _running(client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode())
    execution_finish(execution_id=ex.pk, attempt_number=attempt.number, status="succeeded",
                     exit_code=0, outcome="success", error="", result=None)
    after = _running(client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode())
    print("counter switchyard_attempts_total{outcome=running}:", before, "->", after)
    assert after is None or after >= before
