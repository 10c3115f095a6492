"""Engine benchmark: Switchyard against raw django-q2 and raw COPY, same machine, same database.

    make bench                      # PostgreSQL on 127.0.0.1 (database switchyard_bench)
    BENCH_N=1000 BENCH_LOG_LINES=1000000 make bench

1. Raw django-q2 through a real `qcluster` (ORM broker): throughput = N no-op tasks queued
   before the cluster starts, from the first start to the last end; latency = enqueue -> start
   of LATENCY_N tasks sent one every PACE seconds to the running cluster (p50, p99).
2. Switchyard, measured the same two ways with N no-op executions (python kind, callable
   `noop`) and full bookkeeping (run, execution, attempt, events, audit, dispatch, claim,
   heartbeat thread, fenced finish): executions/s and launch -> start latency.
3. Log ingestion: one command printing BENCH_LOG_LINES lines, executed by the real command
   executor, against a raw psycopg COPY of the same lines into a table of the same shape.

Prints the figures, then one JSON line with the ratios (Switchyard / raw).
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

N = int(os.environ.get("BENCH_N", "500"))
LATENCY_N = int(os.environ.get("BENCH_LATENCY_N", "200"))
PACE = float(os.environ.get("BENCH_PACE", "0.05"))  # seconds between latency-phase launches
LOG_LINES = int(os.environ.get("BENCH_LOG_LINES", "1000000"))
WORKERS = os.environ.get("BENCH_WORKERS", "2")
POLL = os.environ.get("BENCH_POLL", "0.05")
ADMIN_URL = os.environ.get("BENCH_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB_NAME = os.environ.get("BENCH_DB", "switchyard_bench")


def _bench_url() -> str:
    base = ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{DB_NAME}"


def _recreate_database() -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


ENV = {
    "DATABASE_URL": _bench_url(),
    "SWITCHYARD_WORKERS": WORKERS,
    "SWITCHYARD_Q_POLL": POLL,
    "SWITCHYARD_Q_SAVE_LIMIT": "0",
    "SWITCHYARD_LOG_MAX_BYTES": str(512 * 1024 * 1024),  # measure ingestion, not the cap
    "SWITCHYARD_VAR_DIR": str(ROOT / "var" / "bench"),
    "LOG_LEVEL": "WARNING",
    "DEBUG": "false",
}
os.environ.update(ENV)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


_clusters = []


def _start_cluster() -> subprocess.Popen:
    log_dir = Path(os.environ["SWITCHYARD_VAR_DIR"])
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"qcluster-{len(_clusters)}.log", "w")  # noqa: SIM115
    _clusters.append(log)
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env={**os.environ},
        stdout=log, stderr=subprocess.STDOUT,
    )


def _stop_cluster(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait(condition, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("benchmark timed out waiting for the workers")
        time.sleep(0.05)


def _drain_window(starts, stops) -> float:
    return max(stops).timestamp() - min(starts).timestamp()


def bench_raw_q2() -> dict:
    """Throughput: N tasks enqueued before the cluster starts, measured from the first task's
    start to the last one's end. Latency: LATENCY_N tasks enqueued one by one at a steady
    pace into a running cluster, enqueue -> start."""
    from django_q.models import OrmQ
    from django_q.models import Task as QTask
    from django_q.tasks import async_task

    QTask.objects.all().delete()
    OrmQ.objects.all().delete()
    for _ in range(N):
        async_task("bench.tasks.raw_noop", time.time())
    cluster = _start_cluster()
    try:
        _wait(lambda: QTask.objects.count() >= N)
        rows = list(QTask.objects.values_list("started", "stopped"))
        per_second = N / _drain_window([r[0] for r in rows], [r[1] for r in rows])
        QTask.objects.all().delete()
        for _ in range(LATENCY_N):
            async_task("bench.tasks.raw_noop", time.time())
            time.sleep(PACE)
        _wait(lambda: QTask.objects.count() >= LATENCY_N)
    finally:
        _stop_cluster(cluster)
    latencies = [t.result - t.args[0] for t in QTask.objects.all()]
    return {
        "tasks": N,
        "per_second": per_second,
        "latency_p50_ms": _percentile(latencies, 50) * 1000,
        "latency_p99_ms": _percentile(latencies, 99) * 1000,
    }


def bench_switchyard() -> dict:
    """The same two measurements with Switchyard runs of a python no-op task: launch (run,
    execution, events, audit, dispatch), claim, attempt, heartbeat thread, fenced finish."""
    from runs.models import Attempt, Project, Run, Task
    from runs.services import run_launch
    from runs.transitions import Actor

    project, _ = Project.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    task, _ = Task.objects.update_or_create(
        project=project, slug="noop",
        defaults={"name": "No-op", "kind": "python", "spec": {"callable": "noop"},
                  "params_schema": []},
    )
    actor = Actor(via="api", label="bench")
    backlog = [run_launch(task=task, raw_params={}, actor=actor, trigger="api")[0].pk
               for _ in range(N)]
    cluster = _start_cluster()
    launched: dict[int, float] = {}
    try:
        _wait(lambda: Run.objects.filter(pk__in=backlog, status="succeeded").count() >= N)
        spans = list(Attempt.objects.filter(execution__run_id__in=backlog)
                     .values_list("started_at", "finished_at"))
        per_second = N / _drain_window([s[0] for s in spans], [s[1] for s in spans])
        for _ in range(LATENCY_N):
            t0 = time.time()
            run, _ = run_launch(task=task, raw_params={}, actor=actor, trigger="api")
            launched[run.pk] = t0
            time.sleep(PACE)
        _wait(lambda: Run.objects.filter(pk__in=list(launched), status="succeeded").count()
              >= LATENCY_N)
    finally:
        _stop_cluster(cluster)
    latencies = [
        started_at.timestamp() - launched[run_id]
        for run_id, started_at in Attempt.objects.filter(
            execution__run_id__in=list(launched)).values_list("execution__run_id",
                                                               "started_at")
    ]
    return {
        "executions": N,
        "per_second": per_second,
        "latency_p50_ms": _percentile(latencies, 50) * 1000,
        "latency_p99_ms": _percentile(latencies, 99) * 1000,
    }


PRINT_LINES = "import sys\nw = sys.stdout.write\nfor i in range({n}): w(f'log line {{i}} of the benchmark: some typical output text\\n')\n"


def bench_log_ingest() -> dict:
    import psycopg
    from django.db import connection

    from jobs.dispatch import dispatch
    from jobs.tasks import execution_run
    from runs.models import LogChunk, Project, Task
    from runs.services import run_launch
    from runs.transitions import Actor

    project = Project.objects.get(slug="bench")
    task, _ = Task.objects.update_or_create(
        project=project, slug="printer",
        defaults={"name": "Printer", "kind": "command", "params_schema": [],
                  "spec": {"argv": [sys.executable, "-c", PRINT_LINES.format(n=LOG_LINES)]},
                  "timeout_seconds": 600},
    )
    run, _ = run_launch(task=task, raw_params={}, actor=Actor(via="api", label="bench"))
    dispatch()
    execution = run.executions.get()
    t0 = time.perf_counter()
    execution_run(execution.pk)
    switchyard_seconds = time.perf_counter() - t0
    stored = sum(LogChunk.objects.filter(execution=execution, stream="stdout")
                 .values_list("line_count", flat=True))
    assert stored == LOG_LINES, f"stored {stored} of {LOG_LINES} lines"

    # Raw: the same lines, generated by the same program, COPYed into a bare table.
    lines = subprocess.run(  # noqa: S603
        [sys.executable, "-c", PRINT_LINES.format(n=LOG_LINES)], capture_output=True,
        check=True,
    ).stdout.decode().splitlines()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_raw_log")
        cursor.execute("CREATE TABLE bench_raw_log (execution_id bigint, seq integer, "
                       "stream varchar(8), text text)")
    with psycopg.connect(_bench_url(), autocommit=True) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(
            "COPY bench_raw_log (execution_id, seq, stream, text) FROM STDIN"
        ) as copy:
            for seq, line in enumerate(lines):
                copy.write_row((1, seq, "stdout", line))
        raw_seconds = time.perf_counter() - t0
    return {
        "lines": LOG_LINES,
        "switchyard_lines_per_second": LOG_LINES / switchyard_seconds,
        "switchyard_seconds": switchyard_seconds,
        "raw_copy_lines_per_second": LOG_LINES / raw_seconds,
        "raw_copy_seconds": raw_seconds,
    }


def main() -> None:
    _recreate_database()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT,  # noqa: S603
                   env={**os.environ}, check=True)
    import django

    django.setup()
    print(f"Switchyard engine benchmark: N={N}, workers={WORKERS}, poll={POLL}s, "
          f"log lines={LOG_LINES}, database={DB_NAME} (PostgreSQL)")
    raw = bench_raw_q2()
    print(f"raw django-q2      : {raw['per_second']:8.1f} tasks/s       "
          f"latency p50 {raw['latency_p50_ms']:7.1f} ms  p99 {raw['latency_p99_ms']:7.1f} ms")
    ours = bench_switchyard()
    print(f"switchyard no-op   : {ours['per_second']:8.1f} executions/s  "
          f"latency p50 {ours['latency_p50_ms']:7.1f} ms  p99 {ours['latency_p99_ms']:7.1f} ms")
    logs = bench_log_ingest()
    print(f"log ingestion      : switchyard {logs['switchyard_lines_per_second']:10.0f} lines/s"
          f" ({logs['switchyard_seconds']:.2f} s), raw COPY "
          f"{logs['raw_copy_lines_per_second']:10.0f} lines/s ({logs['raw_copy_seconds']:.2f} s)")
    summary = {
        "n": N,
        "workers": int(WORKERS),
        "poll_seconds": float(POLL),
        "raw_q2_tasks_per_second": round(raw["per_second"], 1),
        "switchyard_executions_per_second": round(ours["per_second"], 1),
        "raw_latency_p50_ms": round(raw["latency_p50_ms"], 1),
        "raw_latency_p99_ms": round(raw["latency_p99_ms"], 1),
        "switchyard_latency_p50_ms": round(ours["latency_p50_ms"], 1),
        "switchyard_latency_p99_ms": round(ours["latency_p99_ms"], 1),
        "switchyard_log_lines_per_second": round(logs["switchyard_lines_per_second"]),
        "raw_copy_lines_per_second": round(logs["raw_copy_lines_per_second"]),
        "throughput_ratio": round(ours["per_second"] / raw["per_second"], 3),
        "latency_p50_ratio": round(ours["latency_p50_ms"] / raw["latency_p50_ms"], 3),
        "latency_p99_ratio": round(ours["latency_p99_ms"] / raw["latency_p99_ms"], 3),
        "log_ingest_ratio": round(logs["switchyard_lines_per_second"]
                                  / logs["raw_copy_lines_per_second"], 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
