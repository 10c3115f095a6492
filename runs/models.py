"""The domain model: who owns what (Project, Membership), what can be run (Task), and what
happened (Run, Execution, Attempt, Event, LogChunk, AuditLog, ApiToken).

Models hold data and small derived properties only. Status fields are never assigned here: every
status change goes through `runs.transitions` (see its docstring for the legal moves).
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse

# Longest task timeout (7 days): well below django-q2's own timeout, which must never fire.
MAX_TASK_TIMEOUT = 7 * 24 * 3600


class Role(models.TextChoices):
    """Project roles, ordered: each role can do everything the ones before it can."""

    VIEWER = "viewer", "Viewer"  # sees the project's tasks, runs, logs and artifacts
    OPERATOR = "operator", "Operator"  # also launches runs and controls them (cancel, ...)
    MAINTAINER = "maintainer", "Maintainer"  # also manages tasks and members

    @classmethod
    def rank(cls, role: str) -> int:
        return [cls.VIEWER, cls.OPERATOR, cls.MAINTAINER].index(role)


class Project(models.Model):
    """The unit of ownership: tasks, runs and members belong to one project."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # Retention (`manage.py prune`): finished runs older than this many days, or beyond the
    # newest this-many runs of their task, are deleted with their logs and artifacts.
    # Empty keeps everything. A task's baseline run is always kept.
    retention_days = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Delete finished runs older than this many days; empty keeps them.",
    )
    retention_runs = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Keep only the newest this-many finished runs of each task; empty keeps all.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("project_detail", args=[self.slug])


class Membership(models.Model):
    """A user's role in a project."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.project}"


def default_backoff() -> list[int]:
    return [60, 300, 900]


def default_retry_on() -> list[str]:
    return ["failure", "timed_out"]


class TaskKind(models.TextChoices):
    COMMAND = "command", "Command"  # an argv run as a subprocess, never through a shell
    PYTHON = "python", "Python callable"  # a function registered with @switchyard_callable
    HTTP = "http", "HTTP request"  # one request; the response is kept
    PIPELINE = "pipeline", "Pipeline"  # stages of steps, with matrix, approval and loop-back


class Task(models.Model):
    """What can be run. Edited by staff; every run snapshots it at launch.

    `spec` depends on `kind`. For `command`: {"argv": [...], "env": {...}} where `{{ name }}` in
    an argument or env value is replaced by the parameter `name` (within that one argument).
    `params_schema` is a list of parameter definitions, see `runs.params`.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=TaskKind.choices, default=TaskKind.COMMAND)
    spec = models.JSONField(default=dict, blank=True)
    params_schema = models.JSONField(default=list, blank=True)
    timeout_seconds = models.PositiveIntegerField(
        default=3600,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_TASK_TIMEOUT)],
        help_text="Seconds; the command is terminated (SIGTERM, then SIGKILL) after this.",
    )
    enabled = models.BooleanField(default=True)
    # Retry policy. A lost worker (lease expired) always retries, up to max(max_attempts, 3).
    max_attempts = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="Tries in all, the first included. 1 means no retry.",
    )
    retry_backoff = models.JSONField(
        default=default_backoff, blank=True,
        help_text="Seconds to wait before each retry, e.g. [60, 300, 900]; the last repeats.",
    )
    retry_on = models.JSONField(
        default=default_retry_on, blank=True,
        help_text="Outcomes that retry, e.g. [\"failure\", \"timed_out\", \"unreachable\"].",
    )
    # Concurrency: executions whose rendered key is equal share `concurrency_limit` slots.
    concurrency_key = models.CharField(
        max_length=200, blank=True,
        help_text="Template such as site:{{ site }}; empty means no shared limit.",
    )
    concurrency_limit = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1)],
        help_text="Executions holding the same key at once (queued or running).",
    )
    priority = models.IntegerField(default=0, help_text="Higher starts first.")
    max_parallel = models.PositiveIntegerField(
        default=0, help_text="Executions of one run at once; 0 means no limit.",
    )
    run_deadline_seconds = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Whole-run timeout from launch; the run ends timed_out past it.",
    )
    # Artifacts: files in the working directory matching these globs are kept after each
    # attempt (artifacts.collect). `**` spans directories; `*` stays within one.
    artifact_globs = models.JSONField(
        default=list, blank=True,
        help_text='Files to keep, relative to the working directory, e.g. ["report.html", '
                  '"screenshots/**/*.png"].',
    )
    # Image comparison with the baseline run: the share of pixels that differ (by more than
    # the tolerance on some channel) decides the level.
    baseline_run = models.ForeignKey(
        "Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Image artifacts of later runs are compared with this run's.",
    )
    diff_minor_ratio = models.FloatField(
        default=0.0001, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of differing pixels from which a difference is minor (0.0001 = 0.01%).",
    )
    diff_major_ratio = models.FloatField(
        default=0.01, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of differing pixels from which a difference is major (0.01 = 1%).",
    )
    diff_pixel_tolerance = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(255)],
        help_text="A pixel differs when a channel differs by more than this (0-255).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="task_unique_slug")
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug}"

    def get_absolute_url(self) -> str:
        return reverse("task_launch", args=[self.project.slug, self.slug])

    def clean(self) -> None:
        """Validate the definition; each message names the offending path (spec.argv[2])."""
        from django.core.exceptions import ValidationError

        from runs.specs import task_definition_errors

        errors = task_definition_errors(
            kind=self.kind, spec=self.spec, params_schema=self.params_schema,
            concurrency_key=self.concurrency_key, retry_backoff=self.retry_backoff,
            retry_on=self.retry_on, project_id=self.project_id,
            artifact_globs=self.artifact_globs,
        )
        if (isinstance(self.diff_minor_ratio, float | int)
                and isinstance(self.diff_major_ratio, float | int)
                and self.diff_minor_ratio > self.diff_major_ratio):
            errors.setdefault("diff_major_ratio", []).append(
                "must be at least the minor ratio")
        if self.baseline_run_id and self.pk and (
                Run.objects.filter(pk=self.baseline_run_id).values_list("task_id", flat=True)
                .first() != self.pk):
            errors.setdefault("baseline_run", []).append("must be a run of this task")
        fields = {"spec", "params_schema", "kind", "concurrency_key", "retry_backoff", "retry_on",
                  "artifact_globs", "diff_major_ratio", "baseline_run"}
        by_field: dict[str, list[str]] = {}
        for path, messages in errors.items():
            root = path.split(".")[0].split("[")[0]
            field = root if root in fields else "spec"
            by_field.setdefault(field, []).extend(f"{path}: {m}" for m in messages)
        if by_field:
            raise ValidationError(by_field)

    def snapshot(self) -> dict:
        """The definition a run keeps, so editing the task never changes a run in flight."""
        return {
            "id": self.pk,
            "slug": self.slug,
            "name": self.name,
            "kind": self.kind,
            "spec": self.spec,
            "params_schema": self.params_schema,
            "timeout_seconds": self.timeout_seconds,
            "max_attempts": self.max_attempts,
            "retry_backoff": self.retry_backoff,
            "retry_on": self.retry_on,
            "concurrency_key": self.concurrency_key,
            "concurrency_limit": self.concurrency_limit,
            "priority": self.priority,
            "max_parallel": self.max_parallel,
            "artifact_globs": self.artifact_globs,
        }


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"  # launched; no execution has started yet
    RUNNING = "running", "Running"  # at least one execution started, work remains
    PAUSED = "paused", "Paused"  # starts no new executions until resumed
    WAITING = "waiting", "Waiting"  # blocked on a human approval
    SUCCEEDED = "succeeded", "Succeeded"  # every execution ended well
    FAILED = "failed", "Failed"  # an execution failed and the run cannot go on
    CANCELLED = "cancelled", "Cancelled"  # stopped by a person or program
    TIMED_OUT = "timed_out", "Timed out"  # the run's deadline passed


RUN_TERMINAL = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT}
)


class Trigger(models.TextChoices):
    UI = "ui", "Web page"
    API = "api", "API"
    SCHEDULE = "schedule", "Schedule"
    RERUN = "rerun", "Re-run"
    WEBHOOK = "webhook", "Webhook"


class Run(models.Model):
    """One launch of a task."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="runs")
    task_snapshot = models.JSONField()
    # Validated parameters as they may be shown: secret values replaced by a mask.
    params = models.JSONField(default=dict, blank=True)
    # Secret parameter values, encrypted (runs.secret_box); only the worker decrypts them.
    secret_params = models.TextField(blank=True, editable=False)
    status = models.CharField(
        max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True
    )
    status_reason = models.TextField(blank=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.UI)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
    )
    idempotency_key = models.CharField(max_length=200, blank=True)
    # sha256 of the launch request, so a repeated key with another body is told apart (409).
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    # Re-runs point at the run they repeat; `rerun_mode` is "all" or "failed".
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )
    rerun_mode = models.CharField(max_length=8, blank=True)
    # Pipelines: {"stage": index of the current stage, "iteration": n, "loops": {stage: n}}.
    pipeline_state = models.JSONField(default=dict, blank=True)
    # The last allocated Event.seq. Incremented under this row's lock, so seq is gapless and a
    # reader paging with ?after=seq can never skip an event that commits late.
    last_event_seq = models.PositiveIntegerField(default=0)
    # The worst image comparison level with the task's baseline ("", none, minor, major),
    # kept here so run lists show the badge without reading comparisons.
    visual_diff = models.CharField(max_length=8, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="run_unique_idempotency_key",
            )
        ]
        indexes = [
            models.Index(fields=["project", "-id"], name="run_project_id"),
            models.Index(fields=["task", "-id"], name="run_task_id"),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} of {self.task_snapshot.get('slug', '?')}"

    def get_absolute_url(self) -> str:
        return reverse("run_detail", args=[self.pk])

    @property
    def is_terminal(self) -> bool:
        return self.status in RUN_TERMINAL

    @property
    def duration(self):
        if self.started_at is None:
            return None
        from django.utils import timezone

        return (self.finished_at or timezone.now()) - self.started_at


class ExecutionStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # waiting to be admitted by dispatch (order, backoff, slots)
    QUEUED = "queued", "Queued"  # handed to the worker queue, not yet claimed
    RUNNING = "running", "Running"  # claimed by a worker; an attempt is live
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"  # a human must approve
    SUCCEEDED = "succeeded", "Succeeded"  # the last attempt succeeded
    FAILED = "failed", "Failed"  # the last attempt failed and no retry is left
    CANCELLED = "cancelled", "Cancelled"  # stopped before or while running
    TIMED_OUT = "timed_out", "Timed out"  # the task's timeout killed it
    SKIPPED = "skipped", "Skipped"  # never needed (an earlier stage failed, say)


EXECUTION_TERMINAL = frozenset(
    {
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.TIMED_OUT,
        ExecutionStatus.SKIPPED,
    }
)


class Execution(models.Model):
    """One unit of work inside a run (the whole command for a command task)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="executions")
    name = models.CharField(max_length=200, default="main")
    position = models.PositiveIntegerField(default=0)
    # Pipelines: which stage (index and name), loop iteration, step and matrix cell this is.
    stage_index = models.PositiveIntegerField(default=0)
    stage = models.CharField(max_length=100, blank=True)
    iteration = models.PositiveIntegerField(default=1)
    step = models.CharField(max_length=100, blank=True)
    matrix = models.JSONField(default=dict, blank=True)
    # What this execution runs when it is not the run's task itself (a pipeline step):
    # {"kind", "spec", "timeout_seconds", "max_attempts", ...} and its own parameters.
    definition = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    # Results of earlier stages and the loop-back context, given to the step as JSON input.
    input = models.JSONField(default=dict, blank=True)
    # Set when a re-run reuses an earlier execution's result instead of running again.
    reused_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(
        max_length=20,
        choices=ExecutionStatus.choices,
        default=ExecutionStatus.PENDING,
        db_index=True,
    )
    # The number of the current (or last) attempt; 0 before the first claim. A worker may write
    # results only while its attempt number equals this (fencing).
    attempt = models.PositiveIntegerField(default=0)
    not_before = models.DateTimeField(null=True, blank=True)
    # Rendered concurrency key (empty: none) and its limit, fixed at launch.
    concurrency_key = models.CharField(max_length=200, blank=True, db_index=True)
    concurrency_limit = models.PositiveIntegerField(default=1)
    priority = models.IntegerField(default=0)
    # Why a pending execution is not starting yet, as shown to people.
    waiting_reason = models.CharField(max_length=300, blank=True)
    # Set when someone asks a running execution to stop; the worker's heartbeat picks it up.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=300, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The last allocated LogChunk.seq: allocated in the database by the current attempt only,
    # so a stale worker's late log lines are fenced out like its late result.
    last_log_seq = models.PositiveIntegerField(default=0)
    exit_code = models.IntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "position", "id"]
        indexes = [models.Index(fields=["status", "not_before"], name="execution_dispatch")]

    def __str__(self) -> str:
        return f"Execution {self.pk} ({self.name}) of run {self.run_id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in EXECUTION_TERMINAL


class Attempt(models.Model):
    """One try of an execution: the history behind 'attempt 2 of 3' and 'lost: worker died'."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["execution", "number"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "number"], name="attempt_unique_number")
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} of execution {self.execution_id}"


class Event(models.Model):
    """Append-only timeline entry of a run; `seq` is gapless per run."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=64)
    message = models.TextField()
    execution = models.ForeignKey(
        Execution, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    data = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="event_unique_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind}"


class LogStream(models.TextChoices):
    STDOUT = "stdout", "stdout"
    STDERR = "stderr", "stderr"
    SYSTEM = "system", "system"  # notices written by Switchyard itself (truncation, kill)


class LogChunk(models.Model):
    """A batch of output lines of one attempt. `seq` is per execution (one writer at a time)."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="log_chunks")
    attempt = models.PositiveIntegerField()
    seq = models.PositiveIntegerField()
    stream = models.CharField(max_length=8, choices=LogStream.choices)
    text = models.TextField()
    line_count = models.PositiveIntegerField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["execution", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "seq"], name="logchunk_unique_seq")
        ]

    def __str__(self) -> str:
        return f"Log chunk {self.seq} of execution {self.execution_id}"


class AuditLog(models.Model):
    """Who did what to which object, when and from where. Written in the same transaction as the
    change; never updated or deleted through the app or the admin."""

    created_at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_label = models.CharField(max_length=200, blank=True)
    via = models.CharField(max_length=16, blank=True)  # ui, api, admin, system
    action = models.CharField(max_length=64)
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_logs"
    )
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    changes = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.object_type} {self.object_id}"


class ApiToken(models.Model):
    """A bearer token for programs. Only a SHA-256 of the secret is stored; the full token is
    shown once at creation. `prefix` identifies it in lists."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "API token"
        verbose_name_plural = "API tokens"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Schedule(models.Model):
    """Launches its task with fixed parameters on a cron expression (runs.schedules).

    Each slot launches at most once, however many workers tick: the run's idempotency key is
    the schedule and the slot, unique per project. Slots missed while nothing ticked (every
    worker down) are skipped, counted and noted, never replayed in a burst.
    """

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=100)
    cron = models.CharField(
        max_length=100,
        help_text="Five fields: minute hour day-of-month month day-of-week, e.g. 0 3 * * 1-5.",
    )
    timezone = models.CharField(max_length=64, default="UTC",
                                help_text="IANA time zone the cron expression is read in.")
    params = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_slot_at = models.DateTimeField(null=True, blank=True)
    last_run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    skipped_slots = models.PositiveIntegerField(default=0)
    last_note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["task", "name"]
        constraints = [
            models.UniqueConstraint(fields=["task", "name"], name="schedule_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.cron})"
