"""Scale-out: three "machines" (qcluster process trees with their own worker ids and working
directories, as separate hosts would run them) against one PostgreSQL. Work is shared,
concurrency limits hold across machines, a schedule slot fires once although every machine
ticks, a machine that dies (SIGKILL to its whole process tree) is recovered by the others, and
a machine that freezes and comes back (SIGSTOP, then SIGCONT: a long GC pause or a network
partition) is fenced: its stale attempts record nothing."""

from __future__ import annotations

import signal
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from runs.models import Attempt, Execution, Run, Schedule
from runs.schedules import schedule_create
from runs.services import run_launch
from runs.transitions import Actor
from tests.conftest import QCluster, is_postgres, wait_for
from tests.factories import TaskFactory

ROOT = Path(django_settings.BASE_DIR)
BOB = Actor(via="api", label="bob")
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(600),
    pytest.mark.skipif(not is_postgres(), reason="several machines share one PostgreSQL"),
]


@pytest.fixture
def machines(tmp_path):
    # One host each: its own worker id and working directory, short leases and reaper ticks.
    started = [QCluster(tmp_path, f"machine-{n}", session=True,
                        SWITCHYARD_WORK_ROOT=str(tmp_path / f"machine-{n}" / "work"),
                        SWITCHYARD_LEASE_SECONDS="3", SWITCHYARD_REAP_SECONDS="1",
                        SWITCHYARD_DB_IDLE_TX_TIMEOUT_MS="4000",
                        SWITCHYARD_REDELIVER_SECONDS="5")
               for n in ("a", "b", "c")]
    yield {m.name: m for m in started}
    for machine in started:
        machine.stop()


def _running_on(prefix: str, machines: dict) -> int:
    for machine in machines.values():  # a machine that failed to start fails the test now
        if machine.proc.poll() is not None and machine.proc.returncode != -signal.SIGKILL:
            pytest.fail(f"{machine.name} exited:\n{machine.log_path.read_text()[-3000:]}")
    return Execution.objects.filter(status="running", worker__startswith=prefix).count()


def test_machines_share_work_hold_limits_fire_once_and_recover(machines, project):
    task = TaskFactory(
        project=project, params_schema=[{"name": "site", "type": "string"}],
        concurrency_key="site:{{ site }}", concurrency_limit=2, timeout_seconds=60,
        spec={"argv": [sys.executable, "-c", "import time; time.sleep(1.5)"]})
    # A schedule whose slot (the current minute) is due: every machine's reaper sees it.
    schedule = schedule_create(task=task, data={"name": "minutely", "cron": "* * * * *",
                                                "params": {"site": "s"}}, actor=BOB)
    slot = timezone.now().replace(second=0, microsecond=0)
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=slot)
    runs = [run_launch(task=task, raw_params={"site": "ab"[i % 2]}, actor=BOB)[0]
            for i in range(24)]

    # Machine a dies outright while it runs something; machine b freezes.
    wait_for(lambda: _running_on("machine-a:", machines) > 0
             and _running_on("machine-b:", machines) > 0,
             timeout=120, message="machines a and b to be running executions")
    frozen = list(Execution.objects.filter(status="running", worker__startswith="machine-b:")
                  .values_list("pk", "attempt"))
    machines["machine-a"].signal(signal.SIGKILL)
    machines["machine-b"].signal(signal.SIGSTOP)
    # The frozen attempts' leases expire and machine c takes their executions over; then b
    # wakes up with attempts that are no longer current.
    wait_for(lambda: all(Execution.objects.get(pk=pk).attempt > number
                         for pk, number in frozen), timeout=120,
             message="machine b's executions to be retried elsewhere")
    machines["machine-b"].signal(signal.SIGCONT)

    all_runs = [r.pk for r in runs]
    try:
        wait_for(lambda: not Run.objects.filter(pk__in=all_runs).exclude(
            status__in=TERMINAL).exists(), timeout=240, message="every run to end")
    except pytest.fail.Exception:
        stuck = list(Execution.objects.filter(run_id__in=all_runs).exclude(
            status__in=TERMINAL).values_list("pk", "status", "attempt", "worker",
                                             "waiting_reason", "heartbeat_at"))
        pytest.fail(f"runs did not end; open executions: {stuck}")
    assert set(Run.objects.filter(pk__in=all_runs).values_list("status", flat=True)) == {
        "succeeded"}

    attempts = list(Attempt.objects.filter(execution__run_id__in=all_runs)
                    .values_list("execution_id", "worker", "outcome", "started_at",
                                 "finished_at"))
    # Each execution succeeded exactly once, whatever happened to the machines.
    successes: dict[int, int] = {}
    for execution_id, _w, outcome, _s, _f in attempts:
        successes[execution_id] = successes.get(execution_id, 0) + (outcome == "success")
    assert set(successes.values()) == {1}
    # The lost attempts are recorded as such, and never overwritten by the frozen machine.
    lost = [a for a in attempts if a[2] == "lease_expired"]
    assert {w.split(":")[0] for _e, w, *_ in lost} >= {"machine-a", "machine-b"}
    for pk, number in frozen:
        assert Attempt.objects.get(execution_id=pk, number=number).outcome == "lease_expired"
    # Work was spread, and the limit of 2 per site held across all machines at every moment.
    assert {w.split(":")[0] for _e, w, *_ in attempts} == {"machine-a", "machine-b",
                                                           "machine-c"}
    by_site: dict[str, list] = {}
    sites = dict(Execution.objects.filter(run_id__in=all_runs)
                 .values_list("pk", "concurrency_key"))
    for execution_id, _w, _o, started, finished in attempts:
        by_site.setdefault(sites[execution_id], []).append((started, finished))
    for site, spans in by_site.items():
        points = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans])
        running = peak = 0
        for _when, delta in points:
            running += delta
            peak = max(peak, running)
        assert peak <= 2, f"{site} had {peak} executions at once"

    # Each minute slot launched exactly one run although three machines ticked (the test may
    # span more than one minute: every slot since the first is there once, none twice).
    keys = list(Run.objects.filter(trigger="schedule", task=task)
                .values_list("idempotency_key", flat=True))
    schedule.refresh_from_db()
    minutes = int((schedule.next_run_at - slot) / timedelta(minutes=1))
    expected = {f"schedule:{schedule.pk}:{slot + timedelta(minutes=m):%Y-%m-%dT%H:%MZ}"
                for m in range(minutes)}
    assert sorted(keys) == sorted(expected) and minutes >= 1
    assert schedule.skipped_slots == 0
