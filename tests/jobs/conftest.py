"""Helpers to run a command task through the real worker path (claim, execute, finish)."""

from __future__ import annotations

import pytest

from runs.models import Run
from runs.services import run_launch
from runs.transitions import Actor, execution_queue
from tests.factories import TaskFactory


@pytest.fixture
def run_command(project):
    """Create a task with argv/params, launch it, and run its execution in this process."""

    def run(argv, *, params=None, schema=None, timeout=30, env=None) -> Run:
        from jobs.tasks import execution_run

        spec = {"argv": argv}
        if env:
            spec["env"] = env
        task = TaskFactory(project=project, spec=spec, params_schema=schema or [],
                           timeout_seconds=timeout)
        run, _ = run_launch(task=task, raw_params=params or {},
                            actor=Actor(via="api", label="test"))
        execution = run.executions.get()
        assert execution_queue(execution_id=execution.pk)
        execution_run(execution.pk)
        run.refresh_from_db()
        return run

    return run


def log_text(run: Run, stream: str | None = None) -> str:
    from runs.models import LogChunk

    chunks = LogChunk.objects.filter(execution__run=run).order_by("seq")
    if stream:
        chunks = chunks.filter(stream=stream)
    return "\n".join(c.text for c in chunks)
