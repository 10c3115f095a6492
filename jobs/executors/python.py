"""The python executor: runs a callable registered with @switchyard_callable in the worker.

The callable runs in a thread so that the task timeout and stop requests are noticed at once;
Python cannot kill a thread, so a callable that ignores `ctx.should_stop()` keeps its thread
until it returns, but the execution ends on time and its late result is discarded.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
import traceback
from typing import Any

from django.conf import settings

from jobs.callables import callable_get
from jobs.executors import ExecutionContext, Outcome, error_truncate
from runs.models import ExecutionStatus, LogStream


class CallContext:
    """What a callable gets: log lines into the execution's log, and a stop check."""

    def __init__(self, ctx: ExecutionContext, expired: threading.Event) -> None:
        self._ctx = ctx
        self._expired = expired
        self._lock = threading.Lock()
        self.run_id = ctx.run_id
        self.execution_id = ctx.execution_id
        self.attempt = ctx.attempt
        self.workdir = ctx.workdir
        self.input = ctx.input  # pipelines: earlier stages' results, loop-back context

    def log(self, line: str, *, stream: str = LogStream.STDOUT) -> None:
        with self._lock:
            for part in str(line).split("\n"):
                self._ctx.log.add(stream, part)

    def should_stop(self) -> bool:
        return self._ctx.stop.is_set() or self._expired.is_set()


def python_execute(ctx: ExecutionContext) -> Outcome:
    name = ctx.snapshot["spec"]["callable"]
    fn = callable_get(name)
    if fn is None:
        message = f"No python callable registered as {name!r} in this worker."
        ctx.log.system(message)
        return Outcome(status=ExecutionStatus.FAILED, outcome="not_started", error=message)
    timeout = int(ctx.snapshot.get("timeout_seconds") or settings.SWITCHYARD_DEFAULT_TIMEOUT)
    expired = threading.Event()
    call = CallContext(ctx, expired)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(call, **ctx.params)
        except BaseException as exc:  # reported as the execution's error
            box["error"] = exc
            box["traceback"] = traceback.format_exc()

    # The callable's own log records carry the run and execution ids (config.logging): a new
    # thread starts with an empty context, so it runs in a copy of this one.
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,),
                              name=f"callable-{ctx.execution_id}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        thread.join(timeout=0.05)
        with call._lock:
            if ctx.log.due():
                ctx.log.flush()
        if time.monotonic() >= deadline:
            expired.set()
            ctx.log.system(f"timed out after {timeout} s")
            return Outcome(status=ExecutionStatus.TIMED_OUT, outcome="timed_out",
                           error=f"Timed out after {timeout} s.")
        if ctx.stop.is_set():
            thread.join(timeout=settings.SWITCHYARD_KILL_GRACE)
            if thread.is_alive():
                ctx.log.system("the callable ignored the stop request; its thread is abandoned")
            return Outcome(status=ExecutionStatus.CANCELLED, outcome="stopped",
                           error=ctx.stop_reason or "stopped")
    with call._lock:
        ctx.log.flush()
    if "error" in box:
        exc = box["error"]
        if ctx.stop.is_set():
            return Outcome(status=ExecutionStatus.CANCELLED, outcome="stopped",
                           error=ctx.stop_reason or "stopped")
        for line in box["traceback"].rstrip().split("\n"):
            ctx.log.add(LogStream.STDERR, line)
        ctx.log.flush()
        return Outcome(status=ExecutionStatus.FAILED, outcome="failure",
                       error=error_truncate(f"{type(exc).__name__}: {exc}\n{box['traceback']}"))
    result = box.get("result")
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        ctx.log.system("the callable's return value is not JSON-serialisable; stored as text")
        result = repr(result)
    return Outcome(status=ExecutionStatus.SUCCEEDED, outcome="success", result=result)
