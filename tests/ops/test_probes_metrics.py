"""/healthz, /readyz and /metrics: probes that tell a load balancer the truth (a real server
with its database gone answers 503 on /readyz), and metrics a Prometheus parser reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from jobs.models import ReaperRepairCount
from tests.conftest import subprocess_env, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.django_db
def test_healthz_and_readyz_answer_ok(client: Client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "migrations": "ok"}}


@pytest.mark.django_db
def test_metrics_need_the_token(client: Client, settings):
    settings.SWITCHYARD_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    settings.SWITCHYARD_METRICS_TOKEN = "s3cret-metrics"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics")
    assert ok.status_code == 200 and ok["Content-Type"].startswith("text/plain")


@pytest.mark.django_db
def test_metrics_parse_and_count_what_happened(client: Client, settings, project, hello_task,
                                               personas):
    from jobs.dispatch import dispatch
    from jobs.tasks import execution_run
    from runs.services import run_launch
    from runs.transitions import Actor

    settings.SWITCHYARD_METRICS_TOKEN = "t"
    actor = Actor(via="api", label="t")
    done, _ = run_launch(task=hello_task, raw_params={"name": "a"}, actor=actor)
    dispatch()
    execution_run(done.executions.get().pk)
    run_launch(task=hello_task, raw_params={"name": "b"}, actor=actor)  # stays pending
    ReaperRepairCount.objects.create(kind="leases_expired", total=3)
    text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
    families = _families(text)

    def value(name, sample=None, **labels):
        for s in families[name].samples:
            if (sample is None or s.name == sample) and all(
                    s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise AssertionError(f"no sample {name} {labels}")

    assert value("switchyard_executions", state="succeeded") == 1
    assert value("switchyard_queue_depth", state="pending") == 1
    assert value("switchyard_queue_oldest_waiting_seconds") >= 0
    assert value("switchyard_runs", state="succeeded") == 1
    assert value("switchyard_attempts", "switchyard_attempts_total", outcome="success") == 1
    assert value("switchyard_execution_duration_seconds",
                 "switchyard_execution_duration_seconds_count", task=hello_task.slug) == 1
    assert value("switchyard_execution_duration_seconds",
                 "switchyard_execution_duration_seconds_bucket", task=hello_task.slug,
                 le="+Inf") == 1
    assert value("switchyard_reaper_repairs", "switchyard_reaper_repairs_total",
                 kind="leases_expired") == 3
    assert value("switchyard_workers_alive") == 0
    assert value("switchyard_webhook_deliveries", "switchyard_webhook_deliveries_total",
                 result="failed") == 0


@pytest.mark.django_db
def test_reaper_passes_add_to_the_repair_totals(project):
    from jobs.reaper import ReapReport, _repairs_count

    _repairs_count(ReapReport(leases_expired=2, redelivered=1, dispatched=9))
    _repairs_count(ReapReport(leases_expired=1))
    assert dict(ReaperRepairCount.objects.values_list("kind", "total")) == {
        "leases_expired": 3, "redelivered": 1}


def _serve(env: dict, log: Path):
    handle = open(log, "w")  # noqa: SIM115  closed when the process is stopped
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
         "--port", "0", "--no-access-log"], cwd=ROOT, env=env, stdout=handle,
        stderr=subprocess.STDOUT)

    def port():
        if proc.poll() is not None:
            pytest.fail(f"uvicorn exited:\n{log.read_text()}")
        import re

        found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log.read_text())
        return found.group(1) if found else None

    return proc, f"http://127.0.0.1:{wait_for(port, timeout=60, message='uvicorn')}", handle


@pytest.mark.parametrize("case", ["database down", "migrations missing"])
def test_readyz_fails_when_the_database_is_not_ready(tmp_path, case):
    if case == "database down":
        url = "postgres://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1
    else:
        url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"  # a database never migrated
    env = {**subprocess_env(), "DATABASE_URL": url}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc, base, handle = _serve(env, tmp_path / "uvicorn.log")
    try:
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=30)
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        if case == "database down":
            assert checks["database"].startswith("unreachable")
        else:
            assert checks["database"] == "ok"
            assert "unapplied" in checks["migrations"]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        handle.close()
