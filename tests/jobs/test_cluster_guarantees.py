"""Engine guarantees with real django-q2 clusters, real processes and real signals:
cancel kills the whole process tree, concurrency limits hold across workers, a re-delivered
message never starts a running execution twice, and SIGKILLed workers lose nothing."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db.models import Count, Q

from jobs.reaper import reap
from runs.models import Attempt, Event, Execution, ExecutionStatus, Run, RunStatus
from runs.services import run_launch
from runs.transitions import Actor, execution_cancel, run_cancel
from tests.conftest import QCluster, wait_for
from tests.conftest import process_alive as _alive
from tests.factories import TaskFactory

ROOT = Path(django_settings.BASE_DIR)
PY = sys.executable
BOB = Actor(via="api", label="bob")


@pytest.fixture
def clusters(transactional_db, tmp_path):
    started: list[QCluster] = []

    def start(count: int = 1, workers: int = 2) -> list[QCluster]:
        for index in range(count):
            started.append(QCluster(tmp_path, f"c{len(started) + index}", workers=workers))
        return started

    yield start
    for cluster in started:
        cluster.stop()




def _terminal(run_ids) -> bool:
    return not Run.objects.filter(pk__in=list(run_ids)).exclude(
        status__in=["succeeded", "failed", "cancelled", "timed_out"]).exists()


def test_cancel_of_a_running_command_leaves_no_process_behind(clusters, project, tmp_path):
    clusters(1, workers=1)
    pidfile = tmp_path / "pids"
    task = TaskFactory(
        project=project, timeout_seconds=600,
        params_schema=[{"name": "pidfile", "type": "string"}],
        spec={"argv": [PY, "-c",
                       "import os, subprocess, sys, time\n"
                       "child = subprocess.Popen(['sleep', '300'])\n"
                       "open(sys.argv[1], 'w').write(f'{os.getpid()} {child.pid}')\n"
                       "time.sleep(300)", "{{ pidfile }}"]},
    )
    run, _ = run_launch(task=task, raw_params={"pidfile": str(pidfile)}, actor=BOB)
    wait_for(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2, timeout=60,
             message="the command and its child to start")
    pids = [int(p) for p in pidfile.read_text().split()]
    assert all(_alive(p) for p in pids)
    run_cancel(run_id=run.pk, actor=Actor(via="api", label="bob"), reason="not needed")
    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, timeout=30,
             message="the run to end after cancel")
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert "cancelled by bob: not needed" in run.status_reason
    wait_for(lambda: not any(_alive(p) for p in pids), timeout=10,
             message="every process of the command to be gone")
    execution = run.executions.get()
    assert execution.status == ExecutionStatus.CANCELLED
    assert Event.objects.filter(run=run, kind="execution.cancel_requested").exists()


def test_a_concurrency_limit_holds_across_four_workers(clusters, project):
    clusters(2, workers=2)
    task = TaskFactory(
        project=project, params_schema=[{"name": "site", "type": "string"}],
        concurrency_key="site:{{ site }}", concurrency_limit=2,
        spec={"argv": [PY, "-c", "import time; time.sleep(0.4)"]},
    )
    runs = [run_launch(task=task, raw_params={"site": "a"}, actor=BOB)[0] for _ in range(20)]
    wait_for(lambda: _terminal(r.pk for r in runs), timeout=120,
             message="20 executions to finish")
    assert set(Run.objects.filter(pk__in=[r.pk for r in runs])
               .values_list("status", flat=True)) == {"succeeded"}
    spans = list(Attempt.objects.filter(execution__run__in=runs)
                 .values_list("started_at", "finished_at"))
    assert len(spans) == 20
    points = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans],
                    key=lambda p: (p[0], p[1]))
    running = peak = 0
    for _when, delta in points:
        running += delta
        peak = max(peak, running)
    assert peak == 2  # the limit was used, and never exceeded


def test_a_redelivered_message_does_not_start_a_running_execution_again(
    clusters, project, tmp_path
):
    from jobs.tasks import execution_run

    clusters(1, workers=1)
    marker = tmp_path / "started"
    task = TaskFactory(
        project=project, params_schema=[],
        spec={"argv": [PY, "-c",
                       f"import time; open({str(marker)!r}, 'a').write('x'); time.sleep(2)"]},
    )
    run, _ = run_launch(task=task, raw_params={}, actor=BOB)
    wait_for(lambda: marker.exists(), timeout=60, message="the command to start")
    execution = run.executions.get()
    assert "nothing to do" in execution_run(execution.pk)  # a duplicate delivery, meanwhile
    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, timeout=60,
             message="the run to finish")
    assert marker.read_text() == "x"
    assert Attempt.objects.filter(execution=execution).count() == 1


def test_cancel_of_one_queued_execution_is_immediate(clusters, project):
    task = TaskFactory(project=project, params_schema=[])
    run, _ = run_launch(task=task, raw_params={}, actor=BOB)
    execution = run.executions.get()
    execution_cancel(execution_id=execution.pk, actor=BOB)
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED


CHAOS_RUNS = 200
CHAOS_KILLS = 12


def _pool_pid(worker: str) -> int | None:
    # Execution.worker is "<SWITCHYARD_WORKER_ID>:<pid of the q2 pool process>".
    try:
        return int(worker.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def test_chaos_sigkilled_workers_lose_nothing_and_run_nothing_twice(
    clusters, project, settings
):
    settings.SWITCHYARD_LEASE_SECONDS = 2
    settings.SWITCHYARD_REDELIVER_SECONDS = 5
    clusters(2, workers=2)
    task = TaskFactory(
        project=project, params_schema=[{"name": "n", "type": "integer"}],
        max_attempts=1, retry_backoff=[0], timeout_seconds=60,
        spec={"argv": [PY, "-c",
                       "import sys, time; time.sleep(0.05 + (int(sys.argv[1]) % 7) * 0.05)",
                       "{{ n }}"]},
    )
    run_ids = [run_launch(task=task, raw_params={"n": n}, actor=BOB)[0].pk
               for n in range(CHAOS_RUNS)]
    rng = random.Random(20261121)  # noqa: S311  reproducible chaos, not cryptography
    killed: list[tuple[int, int]] = []
    deadline = time.monotonic() + 300
    while len(killed) < CHAOS_KILLS and time.monotonic() < deadline:
        running = list(Execution.objects.filter(run_id__in=run_ids, status="running")
                       .values_list("pk", "attempt", "worker"))
        if running:
            execution_id, attempt, worker = rng.choice(running)
            pid = _pool_pid(worker)
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append((execution_id, attempt))
        reap()
        time.sleep(rng.uniform(0.1, 0.4))  # pacing of the chaos itself, not synchronisation
        if _terminal(run_ids):
            break
    assert len(killed) >= 3, "the chaos loop found too few running executions to kill"

    def settled() -> bool:
        reap()
        return _terminal(run_ids)

    wait_for(settled, timeout=300, interval=0.5, message="every run to end after the chaos")

    runs = Run.objects.filter(pk__in=run_ids)
    lost = Attempt.objects.filter(execution__run__in=run_ids, outcome="lease_expired").count()
    print(f"chaos: {len(killed)} SIGKILLs, {lost} lease_expired attempts, "
          f"{runs.filter(status='succeeded').count()} of {CHAOS_RUNS} runs succeeded")
    assert runs.count() == CHAOS_RUNS
    assert not runs.exclude(status__in=["succeeded", "failed"]).exists()
    # No execution ran to success twice.
    doubles = (Attempt.objects.filter(execution__run__in=run_ids)
               .values("execution").annotate(ok=Count("id", filter=Q(outcome="success")))
               .filter(ok__gt=1))
    assert not doubles.exists()
    # Every kill is a lease_expired attempt, followed by a retry (or, after 3 losses, failure).
    for execution_id, attempt_number in killed:
        attempt = Attempt.objects.get(execution_id=execution_id, number=attempt_number)
        if attempt.outcome == "success":
            continue  # the kill landed after the result was written
        assert attempt.outcome == "lease_expired", (execution_id, attempt_number,
                                                    attempt.outcome)
        execution = Execution.objects.get(pk=execution_id)
        assert execution.attempt > attempt_number or execution.status == "failed"
    # Runs that did not succeed failed only by losing their worker three times.
    for run in runs.filter(status="failed"):
        outcomes = list(Attempt.objects.filter(execution__run=run)
                        .values_list("outcome", flat=True))
        assert outcomes == ["lease_expired"] * 3, outcomes


def test_workers_register_and_drain_gracefully_on_sigterm(clusters, project, tmp_path):
    from jobs.models import WorkerProcess
    from jobs.registry import workers_alive

    [cluster] = clusters(1, workers=2)
    wait_for(lambda: workers_alive().count() == 2, timeout=60,
             message="both pool processes to register")
    marker = tmp_path / "started"
    task = TaskFactory(
        project=project, params_schema=[],
        spec={"argv": [PY, "-u", "-c",
                       f"import time; open({str(marker)!r}, 'w').write('x'); time.sleep(2); "
                       "print('finished cleanly')"]},
    )
    run, _ = run_launch(task=task, raw_params={}, actor=BOB)
    wait_for(lambda: marker.exists(), timeout=60, message="the command to start")
    cluster.proc.send_signal(signal.SIGTERM)  # as systemd or Ctrl-C would
    cluster.proc.wait(timeout=60)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.status_reason  # finished, not killed
    assert WorkerProcess.objects.count() == 2


@pytest.mark.django_db
def test_no_worker_alive_is_the_visible_reason(hello_task, api_for):
    run, _ = run_launch(task=hello_task, raw_params={"name": "x"}, actor=BOB)
    body = api_for("carol").get(f"/api/runs/{run.pk}").json()
    assert "no worker alive" in body["executions"][0]["why_waiting"]
    status = api_for("carol").get("/api/workers").json()
    assert status["alive"] == 0 and status["workers"] == []


def test_a_matrix_stage_never_exceeds_its_max_parallel_on_four_workers(clusters, project):
    clusters(2, workers=2)
    task = TaskFactory(
        project=project, kind="pipeline", params_schema=[],
        spec={"stages": [{"name": "grid", "matrix": {"x": [1, 2, 3], "y": ["a", "b"]},
                          "max_parallel": 2,
                          "steps": [{"name": "cell", "command": [
                              PY, "-c", "import time; time.sleep(0.5)"]}]}]},
    )
    run, _ = run_launch(task=task, raw_params={}, actor=BOB)
    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, timeout=120,
             message="the matrix run to finish")
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    spans = list(Attempt.objects.filter(execution__run=run)
                 .values_list("started_at", "finished_at"))
    assert len(spans) == 6
    points = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans],
                    key=lambda p: (p[0], p[1]))
    running = peak = 0
    for _when, delta in points:
        running += delta
        peak = max(peak, running)
    assert peak == 2
