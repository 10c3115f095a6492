"""Real worker processes: a django-q2 cluster runs launched runs end to end, and a command
dies with the worker process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from runs.models import Execution, LogChunk, Run, RunStatus
from runs.services import run_launch
from runs.transitions import Actor, execution_queue
from tests.conftest import process_alive as _alive
from tests.conftest import subprocess_env, wait_for
from tests.factories import TaskFactory

ROOT = Path(django_settings.BASE_DIR)
PY = sys.executable


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def qcluster(transactional_db, tmp_path):
    log = open(tmp_path / "qcluster.log", "w")  # noqa: SIM115  closed below
    proc = subprocess.Popen(  # noqa: S603
        [PY, "manage.py", "qcluster"],
        cwd=ROOT,
        env=subprocess_env(SWITCHYARD_WORK_ROOT=str(tmp_path / "work"),
                           SWITCHYARD_WORKERS="2", SWITCHYARD_HEARTBEAT_SECONDS="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    _stop(proc)
    log.close()


def test_a_launched_run_is_executed_by_a_real_cluster(qcluster, project):
    task = TaskFactory(
        project=project,
        spec={"argv": [PY, "-u", "-c",
                       "import sys, time\n"
                       "for i in range(3): print(f'tick {i}', flush=True); time.sleep(0.3)\n"
                       "print('hello', sys.argv[1])", "{{ name }}"]},
        params_schema=[{"name": "name", "type": "string"}],
    )
    run, _ = run_launch(task=task, raw_params={"name": "cluster"},
                        actor=Actor(via="api", label="test"))
    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, timeout=60,
             message="the run to finish on the cluster")
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    text = "\n".join(LogChunk.objects.filter(execution__run=run).order_by("seq")
                     .values_list("text", flat=True))
    assert "tick 2" in text
    assert "hello cluster" in text
    kinds = list(run.events.order_by("seq").values_list("kind", flat=True))
    assert kinds == ["run.queued", "execution.queued", "execution.started", "run.running",
                     "execution.succeeded", "run.succeeded"]
    execution = run.executions.get()
    assert execution.attempts.count() == 1
    assert execution.worker  # host:pid of the cluster's worker process


def test_a_failing_run_on_the_cluster_records_the_exit_code(qcluster, project):
    task = TaskFactory(project=project, params_schema=[],
                       spec={"argv": [PY, "-c", "import sys; sys.exit(3)"]})
    run, _ = run_launch(task=task, raw_params={}, actor=Actor(via="api", label="test"))
    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, timeout=60,
             message="the run to finish on the cluster")
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.executions.get().exit_code == 3




@pytest.mark.django_db(transaction=True)
def test_the_command_dies_when_its_worker_process_is_killed(project, tmp_path):
    pidfile = tmp_path / "command.pid"
    task = TaskFactory(
        project=project,
        params_schema=[{"name": "pidfile", "type": "string"}],
        spec={"argv": [PY, "-c",
                       "import os, sys, time\n"
                       "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
                       "time.sleep(300)", "{{ pidfile }}"]},
        timeout_seconds=600,
    )
    run, _ = run_launch(task=task, raw_params={"pidfile": str(pidfile)},
                        actor=Actor(via="api", label="test"))
    execution = run.executions.get()
    if execution.status == "pending":  # on_commit dispatch may already have queued it
        execution_queue(execution_id=execution.pk)
    worker = subprocess.Popen(  # noqa: S603
        [PY, "manage.py", "shell", "-c",
         f"from jobs.tasks import execution_run; execution_run({execution.pk})"],
        cwd=ROOT,
        env=subprocess_env(SWITCHYARD_WORK_ROOT=str(tmp_path / "work")),
    )
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=60,
                 message="the command to start")
        command_pid = int(pidfile.read_text())
        assert _alive(command_pid)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        wait_for(lambda: not _alive(command_pid), timeout=10,
                 message="the command to die with its worker")
    finally:
        if worker.poll() is None:
            worker.kill()


@pytest.mark.django_db(transaction=True)
def test_grandchildren_of_a_killed_worker_are_swept_by_the_reaper(project, tmp_path,
                                                                   settings):
    from jobs.reaper import reap

    settings.SWITCHYARD_LEASE_SECONDS = 1
    pidfile = tmp_path / "pids"
    task = TaskFactory(
        project=project, params_schema=[{"name": "pidfile", "type": "string"}],
        spec={"argv": [PY, "-c",
                       "import os, subprocess, sys, time\n"
                       "c = subprocess.Popen(['sleep', '300'])\n"
                       "open(sys.argv[1], 'w').write(f'{os.getpid()} {c.pid}')\n"
                       "time.sleep(300)", "{{ pidfile }}"]},
        timeout_seconds=600, retry_backoff=[600],
    )
    run, _ = run_launch(task=task, raw_params={"pidfile": str(pidfile)},
                        actor=Actor(via="api", label="test"))
    execution = run.executions.get()
    if execution.status == "pending":
        execution_queue(execution_id=execution.pk)
    worker = subprocess.Popen(  # noqa: S603
        [PY, "manage.py", "shell", "-c",
         f"from jobs.tasks import execution_run; execution_run({execution.pk})"],
        cwd=ROOT, env=subprocess_env(SWITCHYARD_WORK_ROOT=str(tmp_path / "work")),
    )
    try:
        wait_for(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2,
                 timeout=60, message="the command and its child to start")
        command_pid, grandchild = (int(p) for p in pidfile.read_text().split())
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        wait_for(lambda: not _alive(command_pid), timeout=10, message="the command to die")
        assert _alive(grandchild)  # PDEATHSIG reaches only the direct child...

        def swept() -> bool:
            reap()
            return not _alive(grandchild)

        wait_for(swept, timeout=30, interval=0.5, message="the sweep to kill the grandchild")

        def retried() -> bool:
            reap()
            return Execution.objects.get(pk=execution.pk).status == "pending"

        # ...and once its lease expires, the lost attempt is retried.
        wait_for(retried, timeout=30, interval=0.5, message="the lost attempt to be retried")
    finally:
        if worker.poll() is None:
            worker.kill()
