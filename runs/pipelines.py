"""Pipelines: a task of kind `pipeline` runs stages in order.

Spec:

    {"stages": [
        {"name": "dev", "steps": [{"name": "code", "task": "agent-dev",
                                   "params": {"ticket": "{{ ticket }}"}}]},
        {"name": "qa", "steps": [{"name": "test", "command": ["pytest", "-q"]}],
         "on_failure": {"goto": "dev", "max_loops": 2}},
        {"name": "shots", "matrix": {"page": ["home", "about"], "browser": ["chromium"]},
         "max_parallel": 2, "steps": [{"name": "shot", "task": "screenshot",
                                       "params": {"page": "{{ page }}"}}]},
        {"name": "deploy", "approval": {"role": "operator", "timeout_seconds": 3600,
                                        "on_timeout": "reject"},
         "steps": [{"name": "ship", "command": ["./deploy.sh"]}]}]}

A step is a reference to another task of the project (`task` + `params`) or an inline
`command` (argv). `{{ name }}` in step parameters and commands takes run parameters and matrix
values. `matrix` makes one execution per combination of its axes; `max_parallel` caps the
stage; `approval` makes the stage wait for a person; `on_failure` is `fail` (default),
`continue`, or `{"goto": <earlier stage>, "max_loops": n}`.

Stages are instantiated one at a time (their executions created) when the previous stage has
ended, by `pipeline_advance`, which runs inside the run's locked transition (run_settle). Each
step gets the results of earlier stages, and after a loop-back the failing step's result and
error, as JSON input (`input.json`, $SWITCHYARD_INPUT_FILE).
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta
from typing import Any

from runs.models import Execution, ExecutionStatus, Run, Task

E = ExecutionStatus
APPROVAL_STEP = "__approval__"
STAGE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,60}$")
MAX_CELLS = 256
FAILED = (E.FAILED, E.TIMED_OUT)


# --- validation ------------------------------------------------------------------------------


def pipeline_spec_errors(spec: Any, *, declared: set[str], project_id: int | None,
                         add, placeholders, secret: set[str] | None = None) -> None:
    """Add an error per offending field path (spec.stages[1].on_failure.goto, ...)."""
    if set(spec) - {"stages"}:
        add("spec", f"unknown keys {sorted(set(spec) - {'stages'})}; a pipeline spec has "
            "'stages'")
    stages = spec.get("stages")
    if not isinstance(stages, list) or not stages:
        add("spec.stages", "must be a non-empty list of stages")
        return
    names: list[str] = []
    for i, stage in enumerate(stages):
        where = f"spec.stages[{i}]"
        if not isinstance(stage, dict):
            add(where, "must be an object with 'name' and 'steps'")
            names.append("")
            continue
        unknown = set(stage) - {"name", "steps", "matrix", "max_parallel", "approval",
                                "on_failure"}
        if unknown:
            add(where, f"unknown keys {sorted(unknown)}")
        name = stage.get("name")
        if not isinstance(name, str) or not STAGE_NAME_RE.match(name):
            add(f"{where}.name", "must be 1-60 letters, digits, '-' or '_'")
        elif name in names:
            add(f"{where}.name", f"duplicate stage name {name!r}")
        names.append(name if isinstance(name, str) else "")
        axes: set[str] = set()
        matrix = stage.get("matrix")
        if matrix is not None:
            if not isinstance(matrix, dict) or not matrix:
                add(f"{where}.matrix", "must map axis names to non-empty lists of values")
            else:
                cells = 1
                for axis, values in matrix.items():
                    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", str(axis)):
                        add(f"{where}.matrix.{axis}", "is not a valid axis name")
                    if (not isinstance(values, list) or not values or not all(
                            isinstance(v, str | int | float | bool) for v in values)):
                        add(f"{where}.matrix.{axis}", "must be a non-empty list of plain values")
                    else:
                        cells *= len(values)
                    axes.add(str(axis))
                if cells > MAX_CELLS:
                    add(f"{where}.matrix", f"makes {cells} combinations; at most {MAX_CELLS}")
        mp = stage.get("max_parallel")
        if mp is not None and (not isinstance(mp, int) or isinstance(mp, bool) or mp < 1):
            add(f"{where}.max_parallel", "must be a whole number of at least 1")
        approval = stage.get("approval")
        if approval is not None:
            if not isinstance(approval, dict):
                add(f"{where}.approval", "must be an object like {\"role\": \"operator\"}")
            else:
                if set(approval) - {"role", "timeout_seconds", "on_timeout"}:
                    add(f"{where}.approval", "takes role, timeout_seconds, on_timeout")
                if approval.get("role", "operator") not in ("operator", "maintainer"):
                    add(f"{where}.approval.role", "must be 'operator' or 'maintainer'")
                ts = approval.get("timeout_seconds")
                if ts is not None and (not isinstance(ts, int) or isinstance(ts, bool)
                                       or ts < 1):
                    add(f"{where}.approval.timeout_seconds", "must be a positive whole number")
                if approval.get("on_timeout", "reject") not in ("reject", "approve"):
                    add(f"{where}.approval.on_timeout", "must be 'reject' or 'approve'")
        policy = stage.get("on_failure", "fail")
        if isinstance(policy, dict):
            target = policy.get("goto")
            if set(policy) - {"goto", "max_loops"}:
                add(f"{where}.on_failure", "a loop-back takes 'goto' and 'max_loops'")
            if target not in names[:i]:
                add(f"{where}.on_failure.goto", "must name an earlier stage"
                    + (f" (one of: {', '.join(n for n in names[:i] if n)})" if i else ""))
            loops = policy.get("max_loops", 1)
            if not isinstance(loops, int) or isinstance(loops, bool) or not 1 <= loops <= 20:
                add(f"{where}.on_failure.max_loops", "must be a whole number from 1 to 20")
        elif policy not in ("fail", "continue"):
            add(f"{where}.on_failure",
                "must be 'fail', 'continue' or {\"goto\": <earlier stage>, \"max_loops\": n}")
        steps = stage.get("steps", [])
        if not isinstance(steps, list) or (not steps and approval is None):
            add(f"{where}.steps", "must be a non-empty list of steps")
            continue
        step_names: set[str] = set()
        known = declared | axes
        for j, step in enumerate(steps):
            sw = f"{where}.steps[{j}]"
            if not isinstance(step, dict):
                add(sw, "must be an object with 'name' and 'task' or 'command'")
                continue
            sname = step.get("name")
            if not isinstance(sname, str) or not STAGE_NAME_RE.match(sname):
                add(f"{sw}.name", "must be 1-60 letters, digits, '-' or '_'")
            elif sname in step_names:
                add(f"{sw}.name", f"duplicate step name {sname!r}")
            else:
                step_names.add(sname)
            has_task, has_command = "task" in step, "command" in step
            if has_task == has_command:
                add(sw, "needs exactly one of 'task' (a task of this project) or 'command'")
            if set(step) - {"name", "task", "params", "command", "timeout_seconds"}:
                add(sw, "takes name, task, params, command, timeout_seconds")
            if has_task:
                _check_task_ref(step, sw, project_id, add)
            if has_command:
                argv = step["command"]
                if not isinstance(argv, list) or not argv or not all(
                        isinstance(a, str) for a in argv):
                    add(f"{sw}.command", "must be a non-empty list of strings (argv)")
                else:
                    if placeholders(argv[0]):
                        add(f"{sw}.command[0]", "the program cannot come from a parameter")
                    for k, arg in enumerate(argv):
                        for ref in sorted(placeholders(arg) - known):
                            add(f"{sw}.command[{k}]", f"refers to unknown {{{{ {ref} }}}}")
                        for ref in sorted(placeholders(arg) & (secret or set())):
                            add(f"{sw}.command[{k}]", f"cannot use the secret parameter "
                                f"{ref!r} in an argument; use $SWITCHYARD_PARAM_"
                                f"{ref.upper()} instead")
            params = step.get("params", {})
            if not isinstance(params, dict):
                add(f"{sw}.params", "must map parameter names to values")
            else:
                for pname, value in params.items():
                    if isinstance(value, str):
                        for ref in sorted(placeholders(value) - known):
                            add(f"{sw}.params.{pname}", f"refers to unknown {{{{ {ref} }}}}")
            ts = step.get("timeout_seconds")
            if ts is not None and (not isinstance(ts, int) or isinstance(ts, bool) or ts < 1):
                add(f"{sw}.timeout_seconds", "must be a positive whole number")


def _check_task_ref(step: dict, where: str, project_id: int | None, add) -> None:
    slug = step.get("task")
    if not isinstance(slug, str):
        add(f"{where}.task", "must be the slug of a task of this project")
        return
    if project_id is None:
        return
    task = Task.objects.filter(project_id=project_id, slug=slug).first()
    if task is None:
        add(f"{where}.task", f"no task {slug!r} in this project")
    elif task.kind == "pipeline":
        add(f"{where}.task", "a step cannot run another pipeline")


# --- runtime ---------------------------------------------------------------------------------


def stages_of(run: Run) -> list[dict]:
    return run.task_snapshot.get("spec", {}).get("stages", [])


def is_pipeline(run: Run) -> bool:
    return run.task_snapshot.get("kind") == "pipeline"


def _cells(stage: dict) -> list[dict]:
    matrix = stage.get("matrix") or {}
    if not matrix:
        return [{}]
    axes = list(matrix)
    return [dict(zip(axes, combo, strict=True))
            for combo in itertools.product(*(matrix[a] for a in axes))]


def _step_definition(run: Run, stage: dict, step: dict) -> dict:
    """What the step runs, frozen at instantiation (a task edited later changes nothing)."""
    if "command" in step:
        definition = {"kind": "command", "spec": {"argv": step["command"]},
                      "params_schema": [], "timeout_seconds": step.get("timeout_seconds")
                      or run.task_snapshot.get("timeout_seconds") or 3600}
    else:
        task = Task.objects.filter(project_id=run.project_id, slug=step["task"]).first()
        if task is None:
            definition = {"missing_task": step["task"]}
        else:
            definition = task.snapshot()
            if step.get("timeout_seconds"):
                definition["timeout_seconds"] = step["timeout_seconds"]
    definition["stage_max_parallel"] = stage.get("max_parallel") or 0
    return definition


def stage_input(run: Run, stage_index: int, loop: dict | None) -> dict:
    """Results of earlier stages (their latest iteration) for a step's JSON input."""
    stages: dict[str, dict] = {}
    latest: dict[int, int] = {}
    rows = list(run.executions.filter(stage_index__lt=stage_index).exclude(
        step=APPROVAL_STEP).values("stage_index", "stage", "iteration", "step", "matrix",
                                    "status", "result", "error"))
    for row in rows:
        latest[row["stage_index"]] = max(latest.get(row["stage_index"], 0), row["iteration"])
    for row in rows:
        if row["iteration"] != latest[row["stage_index"]]:
            continue
        key = row["step"] + (_cell_label(row["matrix"]) if row["matrix"] else "")
        stages.setdefault(row["stage"], {})[key] = {
            "status": row["status"], "result": row["result"], "error": row["error"],
            "matrix": row["matrix"]}
    data: dict[str, Any] = {"params": run.params, "stages": stages}
    if loop:
        data["loop"] = loop
    return data


def _render(value: Any, context: dict) -> Any:
    from jobs.executors.command import render

    return render(value, context) if isinstance(value, str) else value


def step_params_render(execution: Execution, context: dict) -> dict:
    """A step's parameters with {{ name }} taken from run parameters (secrets included, in
    the worker only) and the matrix cell; matrix values are parameters too."""
    rendered = {k: _render(v, context) for k, v in (execution.params or {}).items()}
    return {**execution.matrix, **rendered}


def _cell_label(cell: dict) -> str:
    return "[" + ", ".join(f"{k}={v}" for k, v in cell.items()) + "]" if cell else ""


def stage_instantiate(run: Run, index: int, iteration: int, *, now: datetime,
                      loop: dict | None = None, approved: bool = False) -> list[Execution]:
    """Create the executions of a stage (or its approval gate). Call with the run locked."""
    from runs.transitions import SYSTEM, _execution_move, event_append

    stage = stages_of(run)[index]
    base = run.executions.count()
    approval = stage.get("approval")
    if approval and not approved:
        timeout = approval.get("timeout_seconds")
        gate = Execution.objects.create(
            run=run, name=f"{stage['name']}: approval", position=base, stage_index=index,
            stage=stage["name"], iteration=iteration, step=APPROVAL_STEP,
            definition={"kind": "approval", "role": approval.get("role", "operator"),
                        "on_timeout": approval.get("on_timeout", "reject")},
            not_before=now + timedelta(seconds=timeout) if timeout else None,
            input=stage_input(run, index, loop),
        )
        _execution_move(run, gate, E.WAITING_APPROVAL, reason="", actor=SYSTEM, now=now,
                        message=f"Stage {stage['name']} waits for approval by an "
                        f"{approval.get('role', 'operator')}"
                        + (f" (times out in {timeout} s)." if timeout else "."))
        return [gate]
    created = []
    data = stage_input(run, index, loop)
    for step in stage.get("steps", []):
        definition = _step_definition(run, stage, step)
        for cell in _cells(stage):
            key = ""
            if definition.get("concurrency_key"):
                from runs.services import concurrency_key_render

                context = {**run.params, **cell}
                step_params = {k: _render(v, context) for k, v in
                               (step.get("params") or {}).items()}
                key = concurrency_key_render(definition["concurrency_key"],
                                             {**context, **step_params})
            created.append(Execution(
                run=run, name=f"{stage['name']}/{step['name']}{_cell_label(cell)}",
                position=base + len(created), stage_index=index, stage=stage["name"],
                iteration=iteration, step=step["name"], matrix=cell, definition=definition,
                params=dict(step.get("params") or {}), input=data,
                concurrency_key=key, concurrency_limit=definition.get("concurrency_limit") or 1,
                priority=run.task_snapshot.get("priority") or 0,
            ))
    Execution.objects.bulk_create(created)
    event_append(run.pk, "pipeline.stage_started",
                 f"Stage {stage['name']} (iteration {iteration}) started: "
                 f"{len(created)} execution{'s' if len(created) != 1 else ''}.", now=now,
                 data={"stage": stage["name"], "iteration": iteration,
                       "executions": len(created)})
    return created


def pipeline_start(run: Run, *, now: datetime) -> None:
    from runs.transitions import _run_sync_activity

    run.pipeline_state = {"stage": 0, "iteration": 1, "loops": {}}
    run.save(update_fields=["pipeline_state"])
    stage_instantiate(run, 0, 1, now=now)
    _run_sync_activity(run, list(run.executions.values_list("status", flat=True)), now=now)


def pipeline_advance(run: Run, *, now: datetime) -> tuple[str, str] | None:
    """Called on a locked run whose executions have all ended. Starts the next piece of work
    (approved stage's steps, next stage, loop-back) and returns None, or returns the run's
    final (status, reason)."""
    from runs.models import RunStatus as R
    from runs.transitions import event_append

    stages = stages_of(run)
    state = dict(run.pipeline_state or {"stage": 0, "iteration": 1, "loops": {}})
    index, iteration = state["stage"], state["iteration"]
    stage = stages[index]
    current = list(run.executions.filter(stage_index=index, iteration=iteration))
    gate = next((e for e in current if e.step == APPROVAL_STEP), None)
    steps = [e for e in current if e.step != APPROVAL_STEP]
    if any(e.status == E.CANCELLED for e in current):
        return R.CANCELLED, _first_error(current, E.CANCELLED) or "cancelled"
    if gate is not None and gate.status == E.SUCCEEDED and not steps and stage.get("steps"):
        stage_instantiate(run, index, iteration, now=now, approved=True,
                          loop=gate.input.get("loop"))
        return None
    failed = [e for e in current if e.status in FAILED]
    if failed:
        policy = stage.get("on_failure", "fail")
        first = failed[0]
        why = f"stage {stage['name']} failed: {first.name}: {_headline(first.error)}"
        if isinstance(policy, dict):
            target = policy["goto"]
            used = state["loops"].get(stage["name"], 0)
            limit = policy.get("max_loops", 1)
            if used >= limit:
                return R.FAILED, (f"{why}; loop-back to {target} exhausted max_loops ({limit})")
            state["loops"][stage["name"]] = used + 1
            target_index = next(i for i, s in enumerate(stages) if s["name"] == target)
            state.update(stage=target_index, iteration=iteration + 1)
            run.pipeline_state = state
            run.save(update_fields=["pipeline_state"])
            loop = {"from_stage": stage["name"], "iteration": iteration,
                    "failed": [{"name": e.name, "error": e.error, "result": e.result,
                                "matrix": e.matrix} for e in failed]}
            event_append(run.pk, "pipeline.loop_back",
                         f"{why}; looping back to {target} (loop {used + 1} of {limit}).",
                         now=now, data={"from": stage["name"], "to": target,
                                        "loop": used + 1, "max_loops": limit})
            stage_instantiate(run, target_index, iteration + 1, now=now, loop=loop)
            return None
        if policy != "continue":
            return R.FAILED, why
        event_append(run.pk, "pipeline.continued", f"{why}; continuing (on_failure: "
                     "continue).", now=now)
    if index + 1 < len(stages):
        state["stage"] = index + 1
        run.pipeline_state = state
        run.save(update_fields=["pipeline_state"])
        stage_instantiate(run, index + 1, iteration, now=now)
        return None
    return R.SUCCEEDED, ""


def _headline(error: str) -> str:
    lines = (error or "").strip().splitlines()
    return lines[0][:200] if lines else "no error text"


def _first_error(executions: list[Execution], status: str) -> str:
    for e in executions:
        if e.status == status and e.error:
            return _headline(e.error)
    return ""


def progress(run: Run, executions: list[Execution]) -> dict:
    """Done/total per stage (latest iteration) and for the run; the current stage."""
    stages = stages_of(run)
    state = run.pipeline_state or {}
    latest: dict[int, int] = {}
    for e in executions:
        latest[e.stage_index] = max(latest.get(e.stage_index, 0), e.iteration)
    rows = []
    for i, stage in enumerate(stages):
        mine = [e for e in executions if e.stage_index == i and e.iteration == latest.get(i)
                and e.step != APPROVAL_STEP]
        expected = len(stage.get("steps", [])) * len(_cells(stage))
        total = max(expected, len(mine))
        done = sum(1 for e in mine if e.is_terminal)
        gate = next((e for e in executions if e.stage_index == i
                     and e.iteration == latest.get(i) and e.step == APPROVAL_STEP), None)
        status = "pending"
        if gate is not None and gate.status == E.WAITING_APPROVAL:
            status = "waiting_approval"
        elif gate is not None and not mine and gate.is_terminal:
            # Rejected (or timed out) before any step existed: the stage ended with its gate;
            # approved: the steps are being created.
            status = ("failed" if gate.status in FAILED
                      else "cancelled" if gate.status == E.CANCELLED else "running")
        elif mine and all(e.is_terminal for e in mine):
            status = ("failed" if any(e.status in FAILED for e in mine)
                      else "cancelled" if any(e.status == E.CANCELLED for e in mine)
                      else "succeeded")
        elif mine:
            status = "running"
        rows.append({"name": stage["name"], "index": i, "done": done, "total": total,
                     "iteration": latest.get(i, 0), "status": status,
                     "current": i == state.get("stage")})
    done = sum(r["done"] for r in rows)
    total = sum(r["total"] for r in rows)
    return {"stages": rows, "done": done, "total": total,
            "iteration": state.get("iteration", 1),
            "current_stage": stages[state["stage"]]["name"] if stages and "stage" in state
            else None,
            "percent": int(100 * done / total) if total else 0}
