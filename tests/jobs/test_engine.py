"""Engine guarantees in-process: retries and backoff, the reaper, pause/resume, concurrency
admission, deadlines. Time is frozen with time-machine; `now=` is passed where a function
takes it."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from jobs.dispatch import dispatch
from jobs.reaper import reap
from runs.errors import TransitionNotAllowed
from runs.models import Attempt, Event, Execution, ExecutionStatus, Run, RunStatus
from runs.services import run_launch
from runs.transitions import (
    Actor,
    execution_claim,
    execution_finish,
    run_cancel,
    run_pause,
    run_resume,
)
from tests.factories import TaskFactory

PY = sys.executable
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BOB = Actor(via="api", label="bob")


def _launch(task, params=None) -> Run:
    run, _ = run_launch(task=task, raw_params=params or {}, actor=BOB)
    return run


def _claim_and_fail(execution: Execution, *, outcome="failure", now) -> None:
    attempt = execution_claim(execution_id=execution.pk, worker="w:1", now=now)
    assert attempt is not None
    execution_finish(execution_id=execution.pk, attempt_number=attempt.number,
                     status=ExecutionStatus.FAILED, exit_code=1, outcome=outcome,
                     error="boom", now=now)


@pytest.fixture
def flaky(project):
    return TaskFactory(project=project, params_schema=[], spec={"argv": ["false"]},
                       max_attempts=3, retry_backoff=[60, 300, 900],
                       retry_on=["failure"])


def test_retry_timing_follows_the_backoff_schedule(flaky):
    with time_machine.travel(T0, tick=False):
        run = _launch(flaky)
        execution = run.executions.get()
        assert dispatch(now=T0) == 1
        _claim_and_fail(execution.__class__.objects.get(pk=execution.pk), now=T0)
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.PENDING
    assert execution.not_before == T0 + timedelta(seconds=60)
    assert "retry 2 of 3" in execution.waiting_reason
    retry_event = Event.objects.filter(run=run, kind="execution.retrying").get()
    assert "attempt 1 of 3" in retry_event.message
    assert retry_event.data["next_try_at"] == (T0 + timedelta(seconds=60)).isoformat()

    assert dispatch(now=T0 + timedelta(seconds=59)) == 0  # not before its time
    assert dispatch(now=T0 + timedelta(seconds=60)) == 1
    t1 = T0 + timedelta(seconds=60)
    _claim_and_fail(Execution.objects.get(pk=execution.pk), now=t1)
    execution.refresh_from_db()
    assert execution.not_before == t1 + timedelta(seconds=300)

    t2 = t1 + timedelta(seconds=300)
    assert dispatch(now=t2) == 1
    _claim_and_fail(Execution.objects.get(pk=execution.pk), now=t2)
    execution.refresh_from_db()
    run.refresh_from_db()
    assert execution.status == ExecutionStatus.FAILED  # 3 of 3 used
    assert run.status == RunStatus.FAILED
    assert list(Attempt.objects.filter(execution=execution).values_list("number", flat=True)) \
        == [1, 2, 3]


def test_outcomes_not_listed_do_not_retry(flaky):
    run = _launch(flaky)
    dispatch(now=T0)
    _claim_and_fail(run.executions.get(), outcome="timed_out", now=T0)
    assert run.executions.get().status == ExecutionStatus.FAILED


def test_an_expired_lease_is_retried_with_an_explanation(project, settings):
    settings.SWITCHYARD_LEASE_SECONDS = 30
    task = TaskFactory(project=project, params_schema=[], retry_backoff=[10])
    run = _launch(task)
    dispatch(now=T0)
    execution = run.executions.get()
    execution_claim(execution_id=execution.pk, worker="gone:42", now=T0)

    assert reap(now=T0 + timedelta(seconds=29)).leases_expired == 0  # healthy lease kept
    report = reap(now=T0 + timedelta(seconds=31))
    assert report.leases_expired == 1
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.PENDING  # a lost worker always retries
    attempt = Attempt.objects.get(execution=execution, number=1)
    assert attempt.outcome == "lease_expired"
    event = Event.objects.get(run=run, kind="execution.lease_expired")
    assert "gone:42 stopped heartbeating" in event.message

    # The old worker comes back late: its result is refused.
    assert not execution_finish(execution_id=execution.pk, attempt_number=1,
                                status=ExecutionStatus.SUCCEEDED, exit_code=0,
                                now=T0 + timedelta(seconds=32))
    assert Event.objects.filter(run=run, kind="execution.stale_write_rejected").exists()


def test_a_lost_worker_retries_at_most_three_times_in_all(project, settings):
    settings.SWITCHYARD_LEASE_SECONDS = 30
    task = TaskFactory(project=project, params_schema=[], retry_backoff=[0])
    run = _launch(task)
    now = T0
    for _ in range(3):
        dispatch(now=now)
        execution_claim(execution_id=run.executions.get().pk, worker="w:1", now=now)
        now += timedelta(seconds=31)
        reap(now=now)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "stopped heartbeating" in run.status_reason


def test_the_reaper_redelivers_a_queued_execution_nobody_claimed(hello_task, settings):
    from django_q.models import OrmQ

    settings.SWITCHYARD_REDELIVER_SECONDS = 120
    run = _launch(hello_task, {"name": "x"})
    dispatch(now=T0)
    before = OrmQ.objects.count()
    assert reap(now=T0 + timedelta(seconds=100)).redelivered == 0
    assert reap(now=T0 + timedelta(seconds=121)).redelivered == 1
    assert OrmQ.objects.count() == before + 1
    assert Event.objects.filter(run=run, kind="execution.redelivered").exists()


def test_the_reaper_repairs_a_run_whose_executions_all_ended(hello_task):
    run = _launch(hello_task, {"name": "x"})
    Execution.objects.filter(run=run).update(status=ExecutionStatus.SUCCEEDED)  # simulated bug
    assert reap(now=T0).repaired == 1
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert Event.objects.filter(run=run, kind="reaper.repaired").exists()


def test_pause_stops_new_starts_and_resume_continues(hello_task):
    run = _launch(hello_task, {"name": "x"})
    run_pause(run_id=run.pk, actor=BOB)
    assert dispatch(now=T0) == 0
    assert run.executions.get().status == ExecutionStatus.PENDING
    with pytest.raises(TransitionNotAllowed):
        run_pause(run_id=run.pk, actor=BOB)
    run_resume(run_id=run.pk, actor=BOB)
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    assert dispatch(now=T0) == 1


def test_agent_console_lifecycle_queued_running_paused_running_completed(hello_task):
    run = _launch(hello_task, {"name": "x"})
    dispatch(now=T0)
    execution = run.executions.get()
    attempt = execution_claim(execution_id=execution.pk, worker="w:1", now=T0)
    run_pause(run_id=run.pk, actor=BOB)
    run_resume(run_id=run.pk, actor=BOB)
    execution_finish(execution_id=execution.pk, attempt_number=attempt.number,
                     status=ExecutionStatus.SUCCEEDED, exit_code=0)
    kinds = [k for k in Event.objects.filter(run=run).order_by("seq")
             .values_list("kind", flat=True) if k.startswith("run.")]
    assert kinds == ["run.queued", "run.running", "run.paused", "run.resumed", "run.succeeded"]


def test_cancel_of_a_queued_run_is_immediate_and_audited(hello_task, personas):
    from runs.models import AuditLog

    run = _launch(hello_task, {"name": "x"})
    run_cancel(run_id=run.pk, actor=Actor(user=personas["bob"], via="ui", label="bob"),
               reason="wrong target")
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert "cancelled by bob: wrong target" in run.status_reason
    assert AuditLog.objects.filter(action="run.cancel", actor=personas["bob"]).count() == 1
    with pytest.raises(TransitionNotAllowed):
        run_cancel(run_id=run.pk, actor=BOB)


def test_a_concurrency_key_admits_up_to_its_limit_and_says_who_holds_it(project):
    task = TaskFactory(project=project, params_schema=[{"name": "site", "type": "string"}],
                       concurrency_key="site:{{ site }}", concurrency_limit=2)
    runs = [_launch(task, {"site": "a"}) for _ in range(3)]
    other = _launch(task, {"site": "b"})
    assert dispatch(now=T0) == 3  # two of site:a, one of site:b
    waiting = runs[2].executions.get()
    assert waiting.status == ExecutionStatus.PENDING
    assert waiting.waiting_reason == (
        f"waiting for slot site:a (limit 2), held by run {runs[0].pk}, run {runs[1].pk}"
    )
    assert other.executions.get().status == ExecutionStatus.QUEUED
    # A slot frees when its holder ends.
    first = runs[0].executions.get()
    attempt = execution_claim(execution_id=first.pk, worker="w:1")
    execution_finish(execution_id=first.pk, attempt_number=attempt.number,
                     status=ExecutionStatus.SUCCEEDED, exit_code=0)
    dispatch()
    assert runs[2].executions.get().status == ExecutionStatus.QUEUED


def test_priority_orders_admission(project):
    low = TaskFactory(project=project, params_schema=[], concurrency_key="shared",
                      concurrency_limit=1, priority=0)
    high = TaskFactory(project=project, params_schema=[], concurrency_key="shared",
                       concurrency_limit=1, priority=10)
    first_low = _launch(low)
    first_high = _launch(high)
    dispatch(now=T0)
    assert first_high.executions.get().status == ExecutionStatus.QUEUED
    assert first_low.executions.get().status == ExecutionStatus.PENDING


def test_a_run_deadline_times_the_run_out_with_the_reason(project):
    task = TaskFactory(project=project, params_schema=[], run_deadline_seconds=600)
    with time_machine.travel(T0, tick=False):
        run = _launch(task)
    assert run.deadline_at == T0 + timedelta(seconds=600)
    assert reap(now=T0 + timedelta(seconds=599)).deadlines == 0
    assert reap(now=T0 + timedelta(seconds=601)).deadlines == 1
    run.refresh_from_db()
    assert run.status == RunStatus.TIMED_OUT
    assert "deadline" in run.status_reason
    assert run.executions.get().status == ExecutionStatus.CANCELLED


def test_a_run_parallelism_ceiling_holds_back_its_other_executions(project):
    task = TaskFactory(project=project, params_schema=[], max_parallel=1)
    run = _launch(task)
    # A run with three units of work (what a pipeline stage or matrix creates).
    Execution.objects.create(run=run, name="b", position=1)
    Execution.objects.create(run=run, name="c", position=2)
    assert dispatch(now=T0) == 1
    waiting = Execution.objects.get(run=run, name="b")
    assert waiting.status == ExecutionStatus.PENDING
    assert waiting.waiting_reason == "waiting: this run already has 1 of 1 executions running"
