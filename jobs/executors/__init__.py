"""Executors: one per task kind. Each takes an ExecutionContext and returns an Outcome; none
touches statuses (the caller finishes the attempt through runs.transitions)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from jobs.logwriter import LogWriter


@dataclass
class ExecutionContext:
    execution_id: int
    run_id: int
    attempt: int
    snapshot: dict
    params: dict[str, Any]  # secrets included: never log or store this
    secret_values: list[str]
    workdir: Path
    log: LogWriter
    # Set by the heartbeat thread when the attempt must stop (cancel request, lease lost).
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""
    # Pipelines: results of earlier stages and the loop-back context (input.json).
    input: dict = field(default_factory=dict)


@dataclass
class Outcome:
    status: str  # an ExecutionStatus value
    exit_code: int | None = None
    outcome: str = ""
    error: str = ""
    result: Any = None


def error_truncate(text: str, limit: int | None = None) -> str:
    """Bound an error text, keeping its head and tail around a visible marker."""
    limit = limit or settings.SWITCHYARD_ERROR_MAX_CHARS
    if len(text) <= limit:
        return text
    keep = limit - 60
    head, tail = text[: keep // 3], text[-(keep - keep // 3) :]
    return f"{head}\n… [{len(text) - len(head) - len(tail)} characters cut] …\n{tail}"


def executor_for(kind: str) -> Callable[[ExecutionContext], Outcome]:
    from jobs.executors.command import command_execute
    from jobs.executors.http import http_execute
    from jobs.executors.python import python_execute

    executors = {"command": command_execute, "python": python_execute, "http": http_execute}
    if kind not in executors:
        raise ValueError(f"no executor for task kind {kind!r}")
    return executors[kind]
