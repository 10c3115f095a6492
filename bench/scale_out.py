"""Scale-out benchmark: throughput as worker "machines" are added against one PostgreSQL.

    make bench-scale                 # database switchyard_bench_scale on 127.0.0.1
    BENCH_SCALE_MACHINES=1,2,4 BENCH_SCALE_N=200 make bench-scale

Each machine is a `manage.py qcluster` process tree with its own SWITCHYARD_WORKER_ID, its own
working directory and BENCH_SCALE_WORKERS worker processes, as a separate host would run it.
Two workloads, each with the backlog launched before the machines start and measured from the
first attempt's start to the last one's end:

- `sleep`: executions that wait 0.2 s (I/O-bound work: what scaling out is for);
- `noop`: executions that do nothing (the engine's own cost per execution; bound by the
  database and the CPU the machines share here).

Prints a table and one JSON line. All machines share this host's CPUs, so figures show how
the engine coordinates more workers (claims, leases, slots), not what more hardware would add.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MACHINES = [int(m) for m in os.environ.get("BENCH_SCALE_MACHINES", "1,2,3,4").split(",")]
N = int(os.environ.get("BENCH_SCALE_N", "200"))
WORKERS = os.environ.get("BENCH_SCALE_WORKERS", "2")
ADMIN_URL = os.environ.get("BENCH_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB_NAME = os.environ.get("BENCH_SCALE_DB", "switchyard_bench_scale")
URL = f"{ADMIN_URL.rsplit('/', 1)[0]}/{DB_NAME}"
VAR = ROOT / "var" / "bench-scale"

os.environ.update({"DATABASE_URL": URL, "SWITCHYARD_Q_SAVE_LIMIT": "0", "LOG_LEVEL": "WARNING",
                   "DEBUG": "false", "SWITCHYARD_VAR_DIR": str(VAR),
                   "SWITCHYARD_Q_POLL": "0.05"})
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def _recreate_database() -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def _machine(index: int) -> tuple[subprocess.Popen, object]:
    VAR.mkdir(parents=True, exist_ok=True)
    log = open(VAR / f"machine-{index}.log", "w")  # noqa: SIM115  closed in _stop
    env = {**os.environ, "SWITCHYARD_WORKER_ID": f"machine-{index}",
           "SWITCHYARD_WORKERS": WORKERS,
           "SWITCHYARD_WORK_ROOT": str(VAR / f"machine-{index}" / "work")}
    proc = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT,  # noqa: S603
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, log


def _stop(machines) -> None:
    for proc, _log in machines:
        proc.send_signal(signal.SIGTERM)
    for proc, log in machines:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def measure(task, machines: int) -> float:
    from runs.models import Attempt, Run
    from runs.services import run_launch
    from runs.transitions import Actor

    actor = Actor(via="api", label="bench")
    backlog = [run_launch(task=task, raw_params={}, actor=actor, trigger="api")[0].pk
               for _ in range(N)]
    started = [_machine(i) for i in range(machines)]
    try:
        deadline = time.monotonic() + 900
        while Run.objects.filter(pk__in=backlog, status="succeeded").count() < N:
            if time.monotonic() > deadline:
                raise SystemExit("timed out waiting for the machines")
            time.sleep(0.2)
    finally:
        _stop(started)
    spans = list(Attempt.objects.filter(execution__run_id__in=backlog)
                 .values_list("started_at", "finished_at", "worker"))
    window = max(s[1] for s in spans).timestamp() - min(s[0] for s in spans).timestamp()
    used = {s[2].rsplit(":", 1)[0] for s in spans}
    assert len(used) == machines, f"only {sorted(used)} of {machines} machines took work"
    return N / window


def main() -> None:
    _recreate_database()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT,  # noqa: S603
                   env={**os.environ}, check=True)
    import django

    django.setup()
    from runs.models import Project, Task

    project, _ = Project.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    tasks = {
        "sleep": Task.objects.update_or_create(
            project=project, slug="sleep", defaults={
                "name": "Sleep 0.2 s", "kind": "python", "spec": {"callable": "sleep"},
                "params_schema": []})[0],
        "noop": Task.objects.update_or_create(
            project=project, slug="noop", defaults={
                "name": "No-op", "kind": "python", "spec": {"callable": "noop"},
                "params_schema": []})[0],
    }
    # The sleep callable takes `seconds`: a parameter with a default of 0.2.
    Task.objects.filter(pk=tasks["sleep"].pk).update(
        params_schema=[{"name": "seconds", "type": "number", "default": 0.2}])
    tasks["sleep"].refresh_from_db()
    cpus = os.cpu_count()
    print(f"Scale-out benchmark: N={N} per workload, {WORKERS} workers per machine, "
          f"{cpus} CPUs shared by all machines, PostgreSQL database {DB_NAME}")
    print(f"{'machines':>8} {'workers':>8} {'sleep 0.2 s /s':>15} {'no-op /s':>10}")
    results = []
    for machines in MACHINES:
        row = {"machines": machines, "workers": machines * int(WORKERS)}
        for name, task in tasks.items():
            row[name] = round(measure(task, machines), 1)
        results.append(row)
        print(f"{machines:>8} {row['workers']:>8} {row['sleep']:>15} {row['noop']:>10}")
    print(json.dumps({"n": N, "workers_per_machine": int(WORKERS), "cpus": cpus,
                      "results": results}))


if __name__ == "__main__":
    main()
