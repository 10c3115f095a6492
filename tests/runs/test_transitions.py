"""The state machine: the ALLOWED tables are enforced, events are gapless under concurrency."""

from __future__ import annotations

import multiprocessing

import pytest
from django.db import connections, transaction

from runs.errors import TransitionNotAllowed
from runs.models import (
    Event,
    Execution,
    ExecutionStatus,
    Run,
    RunStatus,
)
from runs.services import run_launch
from runs.transitions import (
    EXECUTION_ALLOWED,
    RUN_ALLOWED,
    Actor,
    event_append,
    execution_claim,
    execution_finish,
    execution_transition,
    run_transition,
)


def _launch(task, **params) -> Run:
    run, _ = run_launch(task=task, raw_params={"name": "x", **params},
                        actor=Actor(via="api", label="test"))
    return run


def _force_status(model, pk: int, status: str) -> None:
    # Test setup only: put a row in a given state to probe the table from there.
    model.objects.filter(pk=pk).update(status=status)


RUN_FORBIDDEN = [
    (frm, to) for frm in RunStatus.values for to in RunStatus.values
    if to not in RUN_ALLOWED[frm]
]
EXECUTION_FORBIDDEN = [
    (frm, to) for frm in ExecutionStatus.values for to in ExecutionStatus.values
    if to not in EXECUTION_ALLOWED[frm]
]


@pytest.mark.parametrize(("frm", "to"), RUN_FORBIDDEN)
def test_it_refuses_run_moves_not_in_the_table(hello_task, frm, to):
    run = _launch(hello_task)
    _force_status(Run, run.pk, frm)
    events_before = Event.objects.filter(run=run).count()
    with pytest.raises(TransitionNotAllowed) as info:
        run_transition(run_id=run.pk, to=to)
    assert f"from {frm!r} to {to!r}" in info.value.message
    run.refresh_from_db()
    assert run.status == frm
    assert Event.objects.filter(run=run).count() == events_before


@pytest.mark.parametrize(("frm", "to"), EXECUTION_FORBIDDEN)
def test_it_refuses_execution_moves_not_in_the_table(hello_task, frm, to):
    run = _launch(hello_task)
    execution = run.executions.get()
    _force_status(Execution, execution.pk, frm)
    with pytest.raises(TransitionNotAllowed):
        execution_transition(execution_id=execution.pk, to=to)
    execution.refresh_from_db()
    assert execution.status == frm


def test_it_allows_a_listed_move_and_writes_event_and_audit(hello_task, personas):
    run = _launch(hello_task)
    actor = Actor(user=personas["bob"], via="ui", label="bob", ip_address="127.0.0.1")
    run_transition(run_id=run.pk, to=RunStatus.PAUSED, reason="maintenance", actor=actor)
    run.refresh_from_db()
    assert run.status == RunStatus.PAUSED
    event = Event.objects.filter(run=run).order_by("-seq").first()
    assert event.kind == "run.paused"
    assert event.actor == "bob"
    from runs.models import AuditLog

    audit = AuditLog.objects.filter(action="run.paused").get()
    assert audit.actor == personas["bob"]
    assert audit.changes["status"] == ["queued", "paused"]


def test_a_rolled_back_transition_leaves_no_event_and_no_seq_gap(hello_task):
    run = _launch(hello_task)
    before = Run.objects.get(pk=run.pk).last_event_seq
    with pytest.raises(RuntimeError), transaction.atomic():
        run_transition(run_id=run.pk, to=RunStatus.PAUSED)
        raise RuntimeError("boom")
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert run.last_event_seq == before
    event_append(run.pk, "test.note", "after rollback", now=run.created_at)
    seqs = list(Event.objects.filter(run=run).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_finishing_the_only_execution_settles_the_run(hello_task):
    from runs.transitions import execution_queue

    run = _launch(hello_task)
    execution = run.executions.get()
    assert execution_queue(execution_id=execution.pk)
    attempt = execution_claim(execution_id=execution.pk, worker="w:1")
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING
    assert execution_finish(execution_id=execution.pk, attempt_number=attempt.number,
                            status=ExecutionStatus.FAILED, exit_code=3,
                            error="Exited with code 3\nboom")
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "Exited with code 3" in run.status_reason
    assert run.finished_at is not None


def test_a_stale_attempt_cannot_write_its_result(hello_task):
    from runs.transitions import execution_queue

    run = _launch(hello_task)
    execution = run.executions.get()
    execution_queue(execution_id=execution.pk)
    attempt = execution_claim(execution_id=execution.pk, worker="w:1")
    assert not execution_finish(execution_id=execution.pk, attempt_number=attempt.number + 1,
                                status=ExecutionStatus.SUCCEEDED, exit_code=0)
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.RUNNING
    assert Event.objects.filter(run=run, kind="execution.stale_write_rejected").exists()


# --- gapless seq with several processes --------------------------------------------------------

WRITERS = 4
EVENTS_PER_WRITER = 40


def _writer(run_id: int, writer: int) -> None:
    from django.utils import timezone

    connections.close_all()  # never reuse the parent's socket in a forked child
    try:
        for n in range(EVENTS_PER_WRITER):
            with transaction.atomic():
                event_append(run_id, "test.write", f"writer {writer} event {n}",
                             now=timezone.now(), data={"writer": writer, "n": n})
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_event_seq_is_gapless_and_ordered_with_concurrent_writer_processes(hello_task):
    run = _launch(hello_task)
    start_seq = Run.objects.get(pk=run.pk).last_event_seq
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(run.pk, w)) for w in range(WRITERS)]
    for proc in procs:
        proc.start()

    # Meanwhile read like a client paging with ?after=: a reader must never see seq N+1
    # before N, or it would skip N forever.
    seen: list[int] = []
    after = start_seq
    total = start_seq + WRITERS * EVENTS_PER_WRITER
    while after < total:
        batch = list(Event.objects.filter(run=run, seq__gt=after).order_by("seq")
                     .values_list("seq", flat=True))
        for seq in batch:
            assert seq == after + 1, f"reader saw seq {seq} right after {after}: a gap"
            after = seq
            seen.append(seq)
        if not any(p.is_alive() for p in procs) and not batch and after < total:
            break
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0

    seqs = list(Event.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, total + 1))
    assert seen == list(range(start_seq + 1, total + 1))
    # Within each writer, its events carry increasing seqs (commit order is seq order).
    for writer in range(WRITERS):
        ns = [e.data["n"] for e in Event.objects.filter(run=run, kind="test.write",
                                                         data__writer=writer).order_by("seq")]
        assert ns == list(range(EVENTS_PER_WRITER))
