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
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)
from django.utils import timezone

from jobs.executors import ExecutionContext, Outcome, error_truncate, executor_for
from jobs.logwriter import LogWriter, text_storable
from jobs.worker import worker_id
from runs.models import Execution, ExecutionStatus
from runs.secret_box import mask_secrets, mask_secrets_deep, secrets_decrypt
from runs.transitions import (
    execution_claim,
    execution_finish,
    execution_heartbeat,
    execution_requeue,
    execution_stop_check,
)

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Side thread of a running attempt: refreshes its lease every few seconds, and checks every
    second whether it must stop (a cancel request, or the attempt stopped being current because
    the reaper took it). It only sets ctx.stop; the executor does the killing.

    If the database cannot be reached for most of a lease, the attempt stops itself: by then
    the reaper may have handed the execution to another worker, and two live attempts must
    never run side by side.
    """

    def __init__(self, ctx: ExecutionContext, interval: float, check: float) -> None:
        super().__init__(name=f"heartbeat-{ctx.execution_id}", daemon=True)
        self.ctx = ctx
        self.interval = interval
        self.check = min(check, interval)
        self.done = threading.Event()
        self.give_up_after = settings.SWITCHYARD_LEASE_SECONDS * 0.8

    def run(self) -> None:
        from config.logging import log_context

        with log_context(run_id=self.ctx.run_id, execution_id=self.ctx.execution_id):
            self._beat()

    def _beat(self) -> None:
        last_beat = last_ok = time.monotonic()
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
                    last_ok = time.monotonic()
                except Exception:
                    logger.exception("heartbeat of execution %s failed", self.ctx.execution_id)
                    connection.close()  # the next beat reconnects
                    if time.monotonic() - last_ok > self.give_up_after:
                        self.ctx.stop_reason = ("lost contact with the database for most of "
                                                "the lease; stopping so that no second "
                                                "attempt runs beside this one")
                        self.ctx.stop.set()
                        return
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

    Whatever fails after the claim, the attempt is ended here (failed, internal error) rather
    than left running for the reaper to mistake for a lost worker and run again.
    """
    from jobs.registry import worker_draining

    if worker_draining():
        # Shutting down: hand the message back instead of starting something new.
        execution_requeue(execution_id=execution_id, now=timezone.now(),
                          reason="its worker is shutting down")
        return f"execution {execution_id}: worker draining; handed back to the queue"
    me = worker_id()
    attempt = execution_claim(execution_id=execution_id, worker=me)
    if attempt is None:
        return f"execution {execution_id}: not queued (already claimed or ended); nothing to do"
    from config.logging import log_context

    run_id = Execution.objects.filter(pk=execution_id).values_list("run_id", flat=True).first()
    try:
        with log_context(run_id=run_id, execution_id=execution_id):
            return _attempt_run(execution_id, attempt.number)
    except Exception as exc:
        logger.exception("attempt %s of execution %s crashed", attempt.number, execution_id)
        _finish(execution_id, attempt.number,
                Outcome(status=ExecutionStatus.FAILED, outcome="internal_error",
                        error=error_truncate(f"Switchyard internal error: {exc!r}")), [])
        return f"execution {execution_id}: internal error {exc!r}"


def _attempt_run(execution_id: int, number: int) -> str:
    execution = Execution.objects.select_related("run").get(pk=execution_id)
    run = execution.run
    secrets: dict = {}
    try:
        secrets = secrets_decrypt(run.secret_params)
        snapshot, params = _what_to_run(execution, secrets)
    except ValueError as exc:
        hidden = [str(v) for v in secrets.values()]
        _finish(execution_id, number, Outcome(status=ExecutionStatus.FAILED,
                                              outcome="not_started", error=str(exc)), hidden)
        return mask_secrets(str(exc), hidden)
    hidden = secret_variants(secrets)
    settings.SWITCHYARD_WORK_ROOT.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"e{execution_id}-a{number}-",
                                    dir=settings.SWITCHYARD_WORK_ROOT))
    log = LogWriter(execution_id=execution_id, attempt=number, secret_values=hidden)
    ctx = ExecutionContext(
        execution_id=execution_id, run_id=run.pk, attempt=number, snapshot=snapshot,
        params=params, secret_values=hidden, workdir=workdir, log=log,
        input=execution.input or {},
    )
    heartbeat = Heartbeat(ctx, settings.SWITCHYARD_HEARTBEAT_SECONDS,
                          settings.SWITCHYARD_STOP_CHECK_SECONDS)
    heartbeat.start()
    try:
        try:
            outcome = executor_for(snapshot["kind"])(ctx)
        except Exception as exc:  # an executor bug must still end the attempt visibly
            logger.exception("executor crashed on execution %s", execution_id)
            outcome = Outcome(status=ExecutionStatus.FAILED, outcome="internal_error",
                              error=error_truncate(f"Switchyard internal error: {exc!r}"))
        if ctx.stop_reason.startswith("the attempt is no longer current"):
            pass  # reaped: another attempt owns the execution; nothing of ours is recorded
        else:
            _artifacts_keep(execution, number, snapshot, workdir, log)
        lost = log.close()  # every line is stored before the attempt is reported finished
        if lost:
            outcome.error = (outcome.error + "\n" if outcome.error else "") + (
                f"[switchyard] some log lines could not be stored: {lost}")
        # The lease stays fresh until the result is written, so the reaper cannot take the
        # execution from under a slow finish.
        _finish(execution_id, number, outcome, hidden)
    finally:
        heartbeat.done.set()
        heartbeat.join(timeout=10)
        if not settings.SWITCHYARD_KEEP_WORKDIRS:
            shutil.rmtree(workdir, ignore_errors=True)
    return f"execution {execution_id} attempt {number}: {outcome.status}"


def _artifacts_keep(execution: Execution, number: int, snapshot: dict, workdir: Path,
                    log: LogWriter) -> None:
    """Keep the files the task asks for (artifacts.collect) and compare its images with the
    baseline. Runs before the attempt is reported finished, so a client that sees the run end
    also sees its artifacts. A failure here is reported in the log and never fails the run."""
    from artifacts.collect import artifacts_collect
    from artifacts.services import artifacts_compare
    from runs.transitions import event_append

    globs = snapshot.get("artifact_globs")
    if globs is None:  # an inline pipeline command keeps what the pipeline asks for
        globs = execution.run.task_snapshot.get("artifact_globs") or []
    globs = list(globs)
    if snapshot.get("kind") == "http":
        globs.append("response.*")  # the HTTP executor's response body
    if not globs:
        return
    excluded = set((snapshot.get("spec") or {}).get("files") or {})
    try:
        report = artifacts_collect(execution=execution, attempt=number, workdir=workdir,
                                   globs=globs, excluded=excluded, note=log.system)
        if report.kept:
            log.system(f"kept {len(report.kept)} artifact file(s), "
                       f"{report.bytes / 1024:.1f} KiB")
            artifacts_compare(report.kept)
    except Exception as exc:
        logger.exception("collecting artifacts of execution %s failed", execution.pk)
        log.system(f"artifacts could not be collected: {exc!r}")
        return
    if report.fenced or not (report.kept or report.notes):
        return
    with transaction.atomic():
        event_append(
            execution.run_id, "artifacts.collected",
            f"{execution.name}: kept {len(report.kept)} file(s)"
            + (f"; {len(report.notes)} not kept" if report.notes else "") + ".",
            now=timezone.now(), execution_id=execution.pk,
            data={"kept": [a.name for a in report.kept][:100], "bytes": report.bytes,
                  "notes": report.notes[:50]})


FINISH_TRIES = 4


def _finish(execution_id: int, number: int, outcome: Outcome, hidden: list[str]) -> bool:
    """Write the attempt's end, surviving a database connection that died during a long
    command (the connection is replaced and the write retried)."""
    result = result_storable(mask_secrets_deep(outcome.result, hidden))
    error = text_storable(mask_secrets(outcome.error, hidden))
    if result is _UNSTORABLE:
        result = None
        error = (error + "\n" if error else "") + ("[switchyard] the result was dropped: it is "
                                                   "not valid JSON (NaN or Infinity)")
    for attempt in range(FINISH_TRIES):
        if not connection.in_atomic_block:  # a caller's transaction owns its connection
            close_old_connections()
        try:
            return execution_finish(
                execution_id=execution_id, attempt_number=number, status=outcome.status,
                exit_code=outcome.exit_code, outcome=outcome.outcome, error=error,
                result=result,
            )
        except (OperationalError, InterfaceError):
            if attempt == FINISH_TRIES - 1 or connection.in_atomic_block:
                raise
            logger.warning("finishing execution %s failed on the database; retrying",
                           execution_id, exc_info=True)
            connection.close()
            time.sleep(2**attempt)  # back off between reconnects to a failing database
    return False


_UNSTORABLE = object()


def result_storable(value):
    """The result as the database can store it: NULs replaced; NaN/Infinity refused."""
    import json

    if value is None:
        return None
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, TypeError):
        return _UNSTORABLE
    if isinstance(value, str):
        return text_storable(value)
    if isinstance(value, list):
        return [result_storable(v) for v in value]
    if isinstance(value, dict):
        return {text_storable(str(k)): result_storable(v) for k, v in value.items()}
    return value


def secret_variants(secrets: dict) -> list[str]:
    """Secret values and the forms they take in URLs, so either is masked."""
    from urllib.parse import quote, quote_plus

    values = []
    for value in secrets.values():
        text = str(value)
        for form in (text, quote(text, safe=""), quote_plus(text)):
            if form and form not in values:
                values.append(form)
    return values


def periodic() -> dict[str, int]:
    """The minute tick (a q2 schedule): reaper repairs, then dispatch."""
    from jobs.reaper import reap

    return reap().as_dict()
