"""API schemas (django-ninja / pydantic) for projects, tasks, runs, events and logs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import AfterValidator


class ErrorBody(Schema):
    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="What went wrong and what to do next.")
    fields: dict[str, list[str]] = Field(default_factory=dict,
                                         description="Errors per input field.")


class ErrorOut(Schema):
    error: ErrorBody


class ProjectOut(Schema):
    slug: str
    name: str
    description: str
    role: str | None = None
    retention_days: int | None = None
    retention_runs: int | None = None


class TaskOut(Schema):
    slug: str
    name: str
    description: str
    kind: str
    enabled: bool
    timeout_seconds: int
    params_schema: list[dict[str, Any]]


class LaunchIn(Schema):
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Parameter values by name, typed per the task's "
                                   "params_schema.")


class AttemptOut(Schema):
    number: int
    worker: str
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    outcome: str
    error: str


class ExecutionOut(Schema):
    id: int
    name: str
    status: str
    attempt: int
    exit_code: int | None
    outcome: str
    error: str
    result: Any = None
    worker: str
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    not_before: datetime | None = Field(description="Next try not before this time (backoff).")
    max_attempts: int = 1
    attempt_label: str = Field("", description='e.g. "attempt 2 of 3"')
    why_waiting: str = Field("", description="Why a pending or queued execution has not "
                             "started: backoff, a concurrency slot, pause, no worker alive.")
    concurrency_key: str = ""
    cancel_requested_at: datetime | None = None
    stage: str = ""
    stage_index: int = 0
    iteration: int = 1
    step: str = ""
    matrix: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="A pipeline step's own parameters.")
    reused_from_id: int | None = Field(None, description="Re-run failed only: the execution "
                                       "whose result this one reuses.")
    attempts: list[AttemptOut] = Field(default_factory=list)


class RunOut(Schema):
    id: int
    project: str
    task: str
    status: str
    status_reason: str
    trigger: str
    params: dict[str, Any]
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    is_terminal: bool
    url: str


class StageProgressOut(Schema):
    name: str
    index: int
    done: int
    total: int
    iteration: int
    status: str
    current: bool


class ProgressOut(Schema):
    done: int
    total: int
    percent: int
    iteration: int = 1
    current_stage: str | None = None
    stages: list[StageProgressOut] = Field(default_factory=list)


class RunDetailOut(RunOut):
    executions: list[ExecutionOut]
    progress: ProgressOut
    rerun_of: int | None = None
    rerun_mode: str = ""


class RunPage(Schema):
    items: list[RunOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page; "
                                    "null on the last page.")


class EventOut(Schema):
    seq: int
    kind: str
    message: str
    execution_id: int | None
    data: dict[str, Any]
    actor: str
    created_at: datetime


class EventPage(Schema):
    items: list[EventOut]
    next_after: int = Field(description="Pass as ?after= to get only newer events.")
    run_status: str
    run_finished: bool = Field(description="True when the run has ended and no more events "
                               "will follow its last one.")


class LogChunkOut(Schema):
    seq: int
    attempt: int
    stream: str
    text: str
    line_count: int
    created_at: datetime


class LogPage(Schema):
    items: list[LogChunkOut]
    next_after: int
    execution_status: str
    finished: bool = Field(description="True when the execution has ended and every chunk "
                           "up to next_after has been returned.")


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


StorableText = Annotated[str, AfterValidator(_storable)]


class ControlIn(Schema):
    reason: StorableText = Field("", max_length=300, description="Why; shown in the timeline "
                                 "and audit log.")


class WorkerOut(Schema):
    name: str
    host: str
    pid: int
    started_at: datetime
    last_seen_at: datetime
    draining: bool
    running: list[int] = Field(description="Ids of the executions it is running.")


class WorkersOut(Schema):
    alive: int
    workers: list[WorkerOut] = Field(description="Details, for staff only; empty otherwise.")
    queued: int = Field(description="Executions handed to the queue, not yet claimed.")
    pending: int = Field(description="Executions waiting for admission (order, backoff, slot).")
    running: int


class CommentIn(Schema):
    comment: StorableText = Field("", max_length=1000, description="Why; kept in the audit "
                                  "log.")


class RerunIn(Schema):
    mode: Literal["all", "failed"] = Field("all", description='"failed" reuses what '
                                            "succeeded and runs only what failed.")


class ProjectPage(Schema):
    items: list[ProjectOut]
    next_cursor: str | None = None


class MemberOut(Schema):
    username: str
    role: str
    created_at: datetime


class MemberPage(Schema):
    items: list[MemberOut]
    next_cursor: str | None = None


RoleName = Literal["viewer", "operator", "maintainer"]


class MemberIn(Schema):
    username: StorableText = Field(max_length=150)
    role: RoleName = "viewer"


class MemberRoleIn(Schema):
    role: RoleName


class TaskPage(Schema):
    items: list[TaskOut]
    next_cursor: str | None = None


class TaskDetailOut(TaskOut):
    spec: dict[str, Any]
    max_attempts: int
    retry_backoff: list[int] | Any
    retry_on: list[str] | Any
    concurrency_key: str
    concurrency_limit: int
    priority: int
    max_parallel: int
    run_deadline_seconds: int | None
    artifact_globs: list[str] | Any
    baseline_run: int | None = Field(None, alias="baseline_run_id")
    diff_minor_ratio: float
    diff_major_ratio: float
    diff_pixel_tolerance: int
    created_at: datetime
    updated_at: datetime


class TaskWriteFields(Schema):
    name: StorableText | None = Field(None, max_length=200)
    description: StorableText | None = Field(None, max_length=10000)
    kind: Literal["command", "python", "http", "pipeline"] | None = None
    spec: dict[str, Any] | None = None
    params_schema: list[Any] | None = None
    timeout_seconds: int | None = None
    enabled: bool | None = None
    max_attempts: int | None = None
    retry_backoff: list[Any] | None = None
    retry_on: list[Any] | None = None
    concurrency_key: StorableText | None = Field(None, max_length=200)
    concurrency_limit: int | None = None
    priority: int | None = Field(None, ge=-1000000, le=1000000)
    max_parallel: int | None = None
    artifact_globs: list[Any] | None = Field(
        None, description='Files to keep after each attempt, e.g. ["report.html", '
        '"shots/**/*.png"].')
    diff_minor_ratio: float | None = Field(None, ge=0, le=1)
    diff_major_ratio: float | None = Field(None, ge=0, le=1)
    diff_pixel_tolerance: int | None = Field(None, ge=0, le=255)
    run_deadline_seconds: int | None = None


class TaskCreateIn(TaskWriteFields):
    slug: str = Field(pattern=r"^[-a-zA-Z0-9_]{1,64}$")
    name: StorableText = Field(max_length=200)
    kind: Literal["command", "python", "http", "pipeline"] = "command"
    spec: dict[str, Any]


class TokenIn(Schema):
    name: StorableText = Field(max_length=100)
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The full token. Shown once: store it now.")


class TokenPage(Schema):
    items: list[TokenOut]
    next_cursor: str | None = None
