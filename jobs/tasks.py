"""q2 tasks. They take ids only, reload, and return early when the work is not theirs, because
q2 delivers at least once."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from jobs.executors import ExecutionContext, Outcome, error_truncate, executor_for
from jobs.logwriter import LogWriter
from jobs.worker import worker_id
from runs.models import Execution, ExecutionStatus
from runs.secret_box import mask_secrets, mask_secrets_deep, secrets_decrypt
from runs.transitions import (
    execution_claim,
    execution_finish,
    execution_heartbeat,
    execution_stop_check,
)

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Side thread of a running attempt: refreshes its lease every few seconds, and checks every
    second whether it must stop (a cancel request, or the attempt stopped being current because
    the reaper took it). It only sets ctx.stop; the executor does the killing."""

    def __init__(self, ctx: ExecutionContext, interval: float, check: float) -> None:
        super().__init__(name=f"heartbeat-{ctx.execution_id}", daemon=True)
        self.ctx = ctx
        self.interval = interval
        self.check = min(check, interval)
        self.done = threading.Event()

    def run(self) -> None:
        last_beat = time.monotonic()
        try:
            while not self.done.wait(self.check):
                try:
                    if time.monotonic() - last_beat >= self.interval:
                        last_beat = time.monotonic()
                        state = execution_heartbeat(execution_id=self.ctx.execution_id,
                                                    attempt_number=self.ctx.attempt)
                    else:
                        state = execution_stop_check(execution_id=self.ctx.execution_id,
                                                     attempt_number=self.ctx.attempt)
                except Exception:
                    logger.exception("heartbeat of execution %s failed", self.ctx.execution_id)
                    continue
                if state == "cancel":
                    self.ctx.stop_reason = "cancel requested"
                    self.ctx.stop.set()
                elif state == "lost":
                    self.ctx.stop_reason = "the attempt is no longer current (reaped or ended)"
                    self.ctx.stop.set()
                    return
        finally:
            connection.close()


def _what_to_run(execution: Execution, secrets: dict) -> tuple[dict, dict]:
    """The definition and parameters of an execution: the run's task, or a pipeline step's
    frozen definition with its parameters rendered (secrets only here, in the worker)."""
    run = execution.run
    if not execution.definition:
        return run.task_snapshot, {**run.params, **secrets}
    from runs.params import params_validate
    from runs.pipelines import step_params_render

    definition = execution.definition
    if "missing_task" in definition:
        raise ValueError(f"the step's task {definition['missing_task']!r} no longer exists")
    context = {**run.params, **secrets, **execution.matrix}
    raw = step_params_render(execution, context)
    if definition.get("kind") == "command" and "slug" not in definition:
        # An inline command belongs to the pipeline: it sees the run's parameters too.
        return definition, {**context, **raw}
    schema = definition.get("params_schema") or []
    if not schema:
        return definition, raw
    clean, errors = params_validate(schema, {k: v for k, v in raw.items()
                                             if k in {f["name"] for f in schema}})
    if errors:
        detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items())
        raise ValueError(f"the step's parameters are invalid for task "
                         f"{definition.get('slug')!r}: {detail}")
    return definition, clean


def execution_run(execution_id: int) -> str:
    """Claim the execution, run it, and record how it ended. Idempotent per delivery.

    (q2's worker closes stale database connections before each task, so this does not.)
    """
    me = worker_id()
    attempt = execution_claim(execution_id=execution_id, worker=me)
    if attempt is None:
        return f"execution {execution_id}: not queued (already claimed or ended); nothing to do"
    execution = Execution.objects.select_related("run").get(pk=execution_id)
    run = execution.run
    secrets: dict = {}
    try:
        secrets = secrets_decrypt(run.secret_params)
        snapshot, params = _what_to_run(execution, secrets)
    except ValueError as exc:
        error = mask_secrets(str(exc), [str(v) for v in secrets.values()])
        execution_finish(execution_id=execution_id, attempt_number=attempt.number,
                         status=ExecutionStatus.FAILED, outcome="not_started", error=error)
        return error

    settings.SWITCHYARD_WORK_ROOT.mkdir(parents=True, exist_ok=True)
    workdir = Path(
        tempfile.mkdtemp(prefix=f"e{execution_id}-a{attempt.number}-",
                         dir=settings.SWITCHYARD_WORK_ROOT)
    )
    log = LogWriter(execution_id=execution_id, attempt=attempt.number,
                    secret_values=[str(v) for v in secrets.values()])
    ctx = ExecutionContext(
        execution_id=execution_id,
        run_id=run.pk,
        attempt=attempt.number,
        snapshot=snapshot,
        params=params,
        secret_values=[str(v) for v in secrets.values()],
        workdir=workdir,
        log=log,
        input=execution.input or {},
    )
    heartbeat = Heartbeat(ctx, settings.SWITCHYARD_HEARTBEAT_SECONDS,
                          settings.SWITCHYARD_STOP_CHECK_SECONDS)
    heartbeat.start()
    try:
        outcome = executor_for(snapshot["kind"])(ctx)
    except Exception as exc:  # an executor bug must still end the attempt visibly
        logger.exception("executor crashed on execution %s", execution_id)
        outcome = Outcome(status=ExecutionStatus.FAILED, outcome="internal_error",
                          error=error_truncate(f"Switchyard internal error: {exc!r}"))
    finally:
        heartbeat.done.set()
        heartbeat.join(timeout=10)
        try:
            log.close()  # every line is stored before the attempt is reported finished
        finally:
            if not settings.SWITCHYARD_KEEP_WORKDIRS:
                shutil.rmtree(workdir, ignore_errors=True)
    hidden = ctx.secret_values
    execution_finish(
        execution_id=execution_id,
        attempt_number=attempt.number,
        status=outcome.status,
        exit_code=outcome.exit_code,
        outcome=outcome.outcome,
        # What the program returns or says may contain a secret it was given: mask it too.
        error=mask_secrets(outcome.error, hidden),
        result=mask_secrets_deep(outcome.result, hidden),
    )
    return f"execution {execution_id} attempt {attempt.number}: {outcome.status}"


def periodic() -> dict[str, int]:
    """The minute tick (a q2 schedule): reaper repairs, then dispatch."""
    from jobs.reaper import reap

    return reap().as_dict()
