"""The run page and its live poll: header, controls, a pipeline's stage strip and progress bar,
executions (grouped by stage and iteration for pipelines), log tails and the timeline; and the
whole log of an execution as text.

Everything on the page is drawn from a fixed set of reads (the run, its executions with their
attempts, the log tails, the events, the viewer's role), so the page costs the same number of
queries for one execution or two hundred. Pipeline progress is `selectors.run_progress` over the
executions already loaded; approvals and re-run buttons are decided from the role already read.
The POST views behind the buttons are in `runs.control_views`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.db.models import F, Q, Sum, Window
from django.db.models.functions import RowNumber
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from runs import selectors
from runs.errors import ApplicationError
from runs.forms import APPROVAL_COMMENT_MAX_LENGTH, REASON_MAX_LENGTH
from runs.models import (
    Execution,
    ExecutionStatus,
    LogChunk,
    LogStream,
    Role,
    Run,
    RunStatus,
)
from runs.pipelines import APPROVAL_STEP, is_pipeline
from runs.views import MAX_ID, RELAUNCH_PARAM, bounded_int, duration_text, page

# The run page shows the end of each execution's output; the whole log is a download away.
LOG_TAIL_CHUNKS = 200
LOG_TAIL_LINES = 2000
# One poll sends at most this much per execution; a poll that hits the bound polls again even
# after the run ended, so a fast finisher's last lines are never cut off.
LIVE_CHUNKS = 200
LIVE_EVENTS = 500
FULL_EVENTS = 1000
# An old run page lists this many of its re-runs, newest first (a run re-run a hundred times
# is someone's loop, not something to read on this page).
RERUNS_LISTED = 10

E = ExecutionStatus


# --- log tails -----------------------------------------------------------------------------------


@dataclass
class LogBlock:
    """Consecutive lines of one stream, as rendered (a LogChunk, or the tail of one)."""

    seq: int
    stream: str
    lines: list[str]


@dataclass
class LogTail:
    blocks: list[LogBlock] = field(default_factory=list)
    hidden_lines: int = 0
    last_seq: int = 0


def _block(chunk: LogChunk) -> LogBlock:
    return LogBlock(seq=chunk.seq, stream=chunk.stream, lines=chunk.text.split("\n"))


def _log_tails(executions: list[Execution]) -> dict[int, LogTail]:
    """The last lines of every execution's output in one query (not one per execution).

    Window functions number each execution's chunks from the end and sum its lines, so the page
    can say how much earlier output it left out.
    """
    tails = {e.pk: LogTail() for e in executions}
    if not executions:
        return tails
    chunks = (
        LogChunk.objects.filter(execution_id__in=list(tails))
        .annotate(
            from_end=Window(RowNumber(), partition_by=[F("execution_id")],
                            order_by=F("seq").desc()),
            total_lines=Window(Sum("line_count"), partition_by=[F("execution_id")]),
        )
        .filter(from_end__lte=LOG_TAIL_CHUNKS)
        .order_by("execution_id", "-seq")
    )
    shown: dict[int, int] = {}
    totals: dict[int, int] = {}
    for chunk in chunks:  # newest first per execution
        tail = tails[chunk.execution_id]
        totals[chunk.execution_id] = chunk.total_lines or 0
        tail.last_seq = max(tail.last_seq, chunk.seq)
        room = LOG_TAIL_LINES - shown.get(chunk.execution_id, 0)
        if room <= 0:
            continue
        block = _block(chunk)
        block.lines = block.lines[-room:]
        shown[chunk.execution_id] = shown.get(chunk.execution_id, 0) + len(block.lines)
        tail.blocks.insert(0, block)
    for execution_id, tail in tails.items():
        tail.hidden_lines = max(0, totals.get(execution_id, 0) - shown.get(execution_id, 0))
    return tails


def _logs_after(cursors: dict[int, int]) -> dict[int, LogTail]:
    """New chunks of several executions after per-execution cursors, in one query, at most
    LIVE_CHUNKS per execution (the next poll fetches the rest)."""
    tails = {execution_id: LogTail(last_seq=after) for execution_id, after in cursors.items()}
    if not cursors:
        return tails
    condition = Q()
    for execution_id, after in cursors.items():
        condition |= Q(execution_id=execution_id, seq__gt=after)
    chunks = (
        LogChunk.objects.filter(condition)
        .annotate(n=Window(RowNumber(), partition_by=[F("execution_id")], order_by=F("seq").asc()))
        .filter(n__lte=LIVE_CHUNKS)
        .order_by("execution_id", "seq")
    )
    for chunk in chunks:
        tail = tails[chunk.execution_id]
        tail.blocks.append(_block(chunk))
        tail.last_seq = chunk.seq
    return tails


# --- executions and pipeline stages ----------------------------------------------------------------


def approver_text(role: str) -> str:
    """Who may decide an approval, for sentences: 'an operator or a maintainer'."""
    return "a maintainer" if role == Role.MAINTAINER else "an operator or a maintainer"


@dataclass
class ExecutionView:
    """One execution as the page draws it."""

    execution: Execution
    duration: str
    result_json: str
    log: LogTail
    heading: int = 2  # an h2 on a plain run's page; an h3 inside a pipeline's stage group
    pipeline: bool = False
    can_approve: bool = False  # an approval gate this viewer may decide
    # Executions a re-run took over from the old run: their result was not produced here.
    reused_from_run: int | None = None
    retry_in: str = ""  # a failed attempt's next try: "4 min 10 s" from now

    @property
    def next_attempt(self) -> int:
        return self.execution.attempt + 1

    @property
    def subheading(self) -> int:
        return self.heading + 1

    @property
    def gate(self) -> bool:
        return self.execution.step == APPROVAL_STEP

    @property
    def title(self) -> str:
        """Inside a stage group the stage is said by the group: the step names the card."""
        if self.gate:
            return "Approval"
        return self.execution.step if self.pipeline and self.execution.step else \
            self.execution.name

    @property
    def status_label(self) -> str:
        """An approval's outcome in its own words: Approved or Rejected, not Succeeded/Failed."""
        decision = self.decision
        if decision is not None:
            return "Approved" if decision["approved"] else "Rejected"
        return self.execution.get_status_display()

    @property
    def cell(self) -> list[tuple[str, str]]:
        """The matrix cell's values, in axis order, for display."""
        return [(str(k), _plain(v)) for k, v in (self.execution.matrix or {}).items()]

    @property
    def approval_role(self) -> str:
        return (self.execution.definition or {}).get("role", Role.OPERATOR)

    @property
    def approver(self) -> str:
        return approver_text(self.approval_role)

    @property
    def on_timeout(self) -> str:
        return (self.execution.definition or {}).get("on_timeout", "reject")

    @property
    def decision(self) -> dict | None:
        """{"approved", "by", "comment"} once an approval was decided (its result)."""
        result = self.execution.result
        return result if self.gate and isinstance(result, dict) and "approved" in result \
            else None


def _plain(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _execution_view(execution: Execution, log: LogTail, now: datetime, *, run: Run,
                    role: str | None) -> ExecutionView:
    duration = None
    if execution.started_at:
        duration = (execution.finished_at or now) - execution.started_at
    result = ""
    if execution.result is not None and execution.step != APPROVAL_STEP:
        result = json.dumps(execution.result, indent=2, ensure_ascii=False, sort_keys=False)
    pipeline = is_pipeline(run)
    view = ExecutionView(
        execution=execution, duration=duration_text(duration), result_json=result, log=log,
        heading=3 if pipeline else 2, pipeline=pipeline,
        # run_rerun copies only the old run's executions, so a reused one always comes from
        # the run this one re-runs: no query for the old execution's run.
        reused_from_run=run.rerun_of_id if execution.reused_from_id else None,
    )
    if view.gate and role is not None:
        view.can_approve = Role.rank(role) >= Role.rank(view.approval_role)
    retry_at = getattr(execution, "retry_at", None)  # set by selectors.executions_for_run
    if retry_at is not None:
        view.retry_in = duration_text(retry_at - now) or "a moment"
    return view


@dataclass
class StageGroup:
    """The executions of one stage in one iteration of a pipeline run."""

    index: int
    iteration: int
    name: str
    views: list[ExecutionView] = field(default_factory=list)
    # A later iteration of the same stage exists (a loop-back): drawn collapsed, still there.
    superseded: bool = False
    show_iteration: bool = False  # the run has more than one iteration

    @property
    def key(self) -> str:
        return f"{self.index}-{self.iteration}"

    @property
    def steps(self) -> list[Execution]:
        return [v.execution for v in self.views if not v.gate]

    @property
    def matrix(self) -> list[ExecutionView]:
        """The cells of a matrix stage, for the overview at the top of the group (a wide matrix
        is many cards; the overview shows every cell's state at a glance)."""
        cells = [v for v in self.views if v.cell]
        return cells if len(cells) > 1 else []

    @property
    def axes(self) -> list[str]:
        return [axis for axis, _value in self.matrix[0].cell] if self.matrix else []

    @property
    def several_steps(self) -> bool:
        return len({v.execution.step for v in self.matrix}) > 1

    @property
    def done(self) -> int:
        return sum(1 for e in self.steps if e.is_terminal)

    @property
    def total(self) -> int:
        return len(self.steps)

    @property
    def status(self) -> str:
        """The group as one status: an approval waiting, work left, or how it ended."""
        executions = [v.execution for v in self.views]
        if any(e.status == E.WAITING_APPROVAL for e in executions):
            return E.WAITING_APPROVAL
        if any(not e.is_terminal for e in executions):
            busy = any(e.status in (E.QUEUED, E.RUNNING) or e.attempt for e in executions)
            return E.RUNNING if busy or any(e.is_terminal for e in executions) else E.PENDING
        for status in (E.FAILED, E.TIMED_OUT, E.CANCELLED):
            if any(e.status == status for e in executions):
                return status
        return E.SUCCEEDED

    @property
    def status_label(self) -> str:
        return E(self.status).label


def stage_groups(views: list[ExecutionView]) -> list[StageGroup]:
    """Executions grouped by (stage, iteration), in the order the groups started."""
    groups: dict[tuple[int, int], StageGroup] = {}
    for view in views:
        e = view.execution
        key = (e.stage_index, e.iteration)
        if key not in groups:
            groups[key] = StageGroup(index=e.stage_index, iteration=e.iteration, name=e.stage)
        groups[key].views.append(view)
    latest: dict[int, int] = {}
    for index, iteration in groups:
        latest[index] = max(latest.get(index, 0), iteration)
    several = len({iteration for _index, iteration in groups}) > 1
    for (index, iteration), group in groups.items():
        group.superseded = iteration < latest[index]
        group.show_iteration = several
    return list(groups.values())


def stage_strip(progress: dict, run: Run) -> list[dict]:
    """progress()'s stages with their status label, and the current one only while the run
    goes on (an ended run has no current stage)."""
    rows = []
    for stage in progress.get("stages", []):
        status = stage["status"]
        rows.append({**stage, "label": E(status).label if status in E.values else status,
                     "current": stage["current"] and not run.is_terminal,
                     "anchor": f"group-{stage['index']}-{stage['iteration']}"
                     if stage["iteration"] else ""})
    return rows


# --- controls -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunControls:
    """Which run controls the page offers this user right now.

    `state` names what is shown. The page sends it back with every poll and the poll re-sends
    the controls only when it changed: replacing them every second would wipe a cancel reason
    while it is being typed and move keyboard focus.
    """

    allowed: bool = False  # operator or above: may control this run at all
    pause: bool = False
    resume: bool = False
    cancel: bool = False
    stopping: bool = False  # every execution left has been asked to stop; nothing to add
    rerun: bool = False  # ended: run it again with the same parameters
    rerun_failed: bool = False  # an ended pipeline that did not succeed: only what failed
    reason_max_length = REASON_MAX_LENGTH  # for the cancel form's maxlength

    @property
    def state(self) -> str:
        names = ("pause", "resume", "cancel", "stopping", "rerun", "rerun_failed")
        return "-".join(name for name in names if getattr(self, name)) or "none"

    @property
    def visible(self) -> bool:
        return self.state != "none"


def run_controls(run: Run, executions: list[Execution], role: str | None) -> RunControls:
    """The controls for a user with `role`, from the run and its already loaded executions."""
    if role is None or Role.rank(role) < Role.rank(Role.OPERATOR):
        return RunControls()
    if run.is_terminal:
        # "Failed only" of a single-execution run would be "all" under another name; only a
        # pipeline has succeeded parts to reuse.
        return RunControls(allowed=True, rerun=True, rerun_failed=is_pipeline(run)
                           and run.status != RunStatus.SUCCEEDED)
    left = [e for e in executions if not e.is_terminal]
    # A second cancel would only repeat the stop requests, so show that they are pending.
    stopping = bool(left) and all(
        e.status == E.RUNNING and e.cancel_requested_at for e in left
    )
    if stopping:
        return RunControls(allowed=True, stopping=True)
    return RunControls(
        allowed=True,
        pause=run.status in (RunStatus.QUEUED, RunStatus.RUNNING),
        resume=run.status == RunStatus.PAUSED,
        cancel=True,
    )


# --- the page and its poll ------------------------------------------------------------------------


@dataclass
class RunPage:
    """What the page and every poll draw from: the run, its executions, the viewer's role."""

    run: Run
    executions: list[Execution]
    role: str | None
    now: datetime

    def views(self, tails: dict[int, LogTail]) -> list[ExecutionView]:
        return [_execution_view(e, tails[e.pk], self.now, run=self.run, role=self.role)
                for e in self.executions]

    def context(self) -> dict[str, Any]:
        """The header, controls and progress; shared by the page and every live poll."""
        run, role = self.run, self.role
        schema = run.task_snapshot.get("params_schema", [])
        secret = {d.get("name") for d in schema if d.get("type") == "secret"}
        again = {
            name: ("true" if value is True else "" if value is False else str(value))
            for name, value in run.params.items()
            if name not in secret
        }
        can_launch = role is not None and Role.rank(role) >= Role.rank(Role.OPERATOR)
        relaunch_url = ""
        if can_launch:
            # reverse() with the slugs already loaded: task.get_absolute_url() would query the
            # task's project again.
            query = {**again, RELAUNCH_PARAM: str(run.pk)} if again else {}
            relaunch_url = reverse("task_launch", args=[run.project.slug, run.task.slug]) + (
                f"?{urlencode(query)}" if query else ""
            )
        pipeline = is_pipeline(run)
        progress = selectors.run_progress(run, self.executions) if pipeline else {}
        gates = [e for e in self.executions if e.status == E.WAITING_APPROVAL]
        return {
            "run": run,
            "duration": duration_text(run.duration),
            "relaunch_url": relaunch_url,
            "controls": run_controls(run, self.executions, role),
            "pipeline": pipeline,
            "progress": progress,
            "stages": stage_strip(progress, run) if pipeline else [],
            "waiting_gates": [{"execution": e, "approver": approver_text(
                (e.definition or {}).get("role", Role.OPERATOR))} for e in gates],
            "approval_comment_max_length": APPROVAL_COMMENT_MAX_LENGTH,
        }


def _run_page(request: HttpRequest, run: Run) -> RunPage:
    now = timezone.now()
    return RunPage(run=run, executions=selectors.executions_for_run(run, now=now),
                   role=selectors.role_of(request.user, run.project), now=now)


def _poll_url(run: Run, events_after: int, cursors: dict[int, int]) -> str:
    query = [("events_after", str(events_after))]
    query += [("log", f"{execution_id}:{seq}") for execution_id, seq in sorted(cursors.items())]
    return reverse("run_live", args=[run.pk]) + "?" + urlencode(query)


def _reruns(run: Run) -> list[Run]:
    """The runs that re-ran this one, newest first. Only an ended run can be re-run, so a run
    still going skips the query."""
    if not run.is_terminal:
        return []
    return list(Run.objects.filter(rerun_of=run).only("id", "status", "rerun_mode")
                .order_by("-id")[:RERUNS_LISTED])


@require_GET
@page
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """Everything about one run as of now, then kept live by polling `run_live`."""
    run = selectors.run_get(request.user, run_id)
    state = _run_page(request, run)
    tails = _log_tails(state.executions)
    events = selectors.events_after(run, 0, limit=FULL_EVENTS)
    events_after = events[-1].seq if events else 0
    cursors = {e.pk: tails[e.pk].last_seq for e in state.executions}
    context = state.context()
    views = state.views(tails)
    from artifacts.views import run_artifacts_context

    return render(
        request,
        "runs/run_detail.html",
        {
            **run_artifacts_context(run, state.role),
            **context,
            "executions": views,
            "groups": stage_groups(views) if context["pipeline"] else [],
            "reruns": _reruns(run),
            "events": events,
            "params": sorted(run.params.items()),
            # More events than one page: keep polling until caught up, even if the run ended.
            "live": not run.is_terminal or len(events) >= FULL_EVENTS,
            "poll_url": _poll_url(run, events_after, cursors),
            "nav": "runs",
        },
    )


def _log_cursors(values: list[str]) -> dict[int, int]:
    cursors: dict[int, int] = {}
    for value in values:
        execution_id, sep, after = value.partition(":")
        if not sep:
            raise ApplicationError(
                "log must look like <execution id>:<last seq>; reload the page to start over."
            )
        cursors[bounded_int(execution_id, "log execution id", maximum=MAX_ID)] = bounded_int(
            after, "log seq"
        )
    return cursors


@require_GET
@page
def run_live(request: HttpRequest, run_id: int) -> HttpResponse:
    """One poll of the run page: the new events and log lines after the cursors, appended with
    out-of-band swaps, a refreshed header, progress and execution summaries, the run controls
    when they differ from the ones the page shows (`shown`), and the next poller.

    Executions the page has not seen (a pipeline's next stage or iteration) are sent whole:
    into their stage group when the page has it, else in a new group. The poller stops (no
    hx-trigger) once the run has ended and everything was delivered.
    """
    run = selectors.run_get(request.user, run_id)
    try:
        events_after = bounded_int(request.GET.get("events_after"), "events_after")
        requested = _log_cursors(request.GET.getlist("log"))
    except ApplicationError as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain; charset=utf-8")
    state = _run_page(request, run)
    known = {e.pk for e in state.executions}
    # Cursors of other runs' executions are ignored.
    cursors = {eid: after for eid, after in requested.items() if eid in known}
    fresh = [e for e in state.executions if e.pk not in cursors]
    updates = _logs_after(cursors)
    tails = {**updates, **_log_tails(fresh)}
    events = selectors.events_after(run, events_after, limit=LIVE_EVENTS)
    next_events_after = events[-1].seq if events else events_after
    caught_up = len(events) < LIVE_EVENTS and all(
        len(tail.blocks) < LIVE_CHUNKS for tail in updates.values()
    )
    next_cursors = {e.pk: tails[e.pk].last_seq for e in state.executions}
    views = state.views(tails)
    context = state.context()
    controls: RunControls = context["controls"]
    return render(
        request,
        "runs/partials/run_live.html",
        {
            **context,
            **(_live_groups(views, cursors) if context["pipeline"] else {}),
            # `shown` is the state of the controls on the page (see RunControls).
            "controls_changed": controls.allowed and request.GET.get("shown") != controls.state,
            "updated": [v for v in views if v.execution.pk in cursors],
            "fresh": [v for v in views if v.execution.pk not in cursors],
            "events": events,
            "live": not (run.is_terminal and caught_up),
            "poll_url": _poll_url(run, next_events_after, next_cursors),
        },
    )


def _live_groups(views: list[ExecutionView], cursors: dict[int, int]) -> dict[str, Any]:
    """How a poll adds a pipeline's new executions: groups the page has (it has seen one of
    their executions) get their new cards appended; groups it has not are sent whole."""
    shown_groups, fresh_in_shown, new_groups = [], [], []
    for group in stage_groups(views):
        seen = [v for v in group.views if v.execution.pk in cursors]
        fresh = [v for v in group.views if v.execution.pk not in cursors]
        if not seen:
            new_groups.append(group)
            continue
        shown_groups.append(group)
        if fresh:
            fresh_in_shown.append((group, fresh))
    return {"shown_groups": shown_groups, "fresh_in_shown": fresh_in_shown,
            "new_groups": new_groups}


@require_GET
@page
def execution_log(request: HttpRequest, run_id: int, execution_id: int) -> StreamingHttpResponse:
    """The whole output of an execution as plain text, streamed a page of chunks at a time:
    shown in the browser, or saved as a file with ?download=1."""
    run = selectors.run_get(request.user, run_id)
    execution = Execution.objects.filter(pk=execution_id, run=run).first()
    if execution is None:
        raise Http404(f"Execution {execution_id} not found in run {run.pk}.")

    def lines() -> Iterator[str]:
        after = 0
        while True:
            chunks = selectors.logs_after(execution, after, limit=1000)
            for chunk in chunks:
                prefix = "" if chunk.stream == LogStream.STDOUT else f"[{chunk.stream}] "
                for line in chunk.text.split("\n"):
                    yield f"{prefix}{line}\n"
            if len(chunks) < 1000:
                return
            after = chunks[-1].seq

    response = StreamingHttpResponse(lines(), content_type="text/plain; charset=utf-8")
    filename = f"run-{run.pk}-{execution.name}.log".replace('"', "")
    disposition = "attachment" if request.GET.get("download") == "1" else "inline"
    response["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    return response
