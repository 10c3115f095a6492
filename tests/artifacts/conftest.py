"""Helpers: run a command task that writes files, through the real worker path."""

from __future__ import annotations

import io
import sys

import pytest
from PIL import Image, ImageDraw

from runs.models import Run
from runs.services import run_launch
from runs.transitions import Actor, execution_queue
from tests.factories import TaskFactory

ACTOR = Actor(via="api", label="test")

# Writes files named on the command line: "path=text" (text file), "path@WxH:color" (PNG with
# an optional black box "+x,y,w,h"), "path->target" (a symlink), "path~N" (N bytes).
WRITER = r"""
import os, sys
from PIL import Image, ImageDraw
for spec in sys.argv[1:]:
    if "->" in spec:
        path, target = spec.split("->", 1)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        os.symlink(target, path)
    elif "@" in spec:
        path, rest = spec.split("@", 1)
        size, _, color = rest.partition(":")
        color, _, box = color.partition("+")
        w, h = map(int, size.split("x"))
        image = Image.new("RGB", (w, h), color or "white")
        if box:
            x, y, bw, bh = map(int, box.split(","))
            ImageDraw.Draw(image).rectangle([x, y, x + bw - 1, y + bh - 1], fill="black")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        image.save(path)
    elif "~" in spec:
        path, n = spec.split("~", 1)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x" * int(n))
    else:
        path, _, text = spec.partition("=")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
"""


def writer_argv(*specs: str) -> list[str]:
    return [sys.executable, "-c", WRITER, *specs]


def png(size=(100, 100), color="white", box=None) -> bytes:
    image = Image.new("RGB", size, color)
    if box:
        x, y, w, h = box
        ImageDraw.Draw(image).rectangle([x, y, x + w - 1, y + h - 1], fill="black")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def execute(run: Run) -> Run:
    from jobs.tasks import execution_run

    # Pipelines add executions as stages start: run whatever is runnable until nothing is.
    while True:
        execution = run.executions.filter(status__in=["pending", "queued"]).order_by("pk").first()
        if execution is None:
            break
        if execution.status == "pending":  # not yet admitted (in a test transaction, dispatch
            assert execution_queue(execution_id=execution.pk)  # runs on commit: never)
        execution_run(execution.pk)
    run.refresh_from_db()
    return run


@pytest.fixture
def files_task(project):
    """A command task writing the files given by its `files` parameter (space-separated specs
    as in WRITER), keeping `globs`."""

    def make(globs, **fields):
        return TaskFactory(
            project=project, slug=fields.pop("slug", "writer"),
            spec={"argv": [sys.executable, "-c",
                           "import os, subprocess, sys\n"
                           "specs = os.environ['SWITCHYARD_PARAM_FILES'].split()\n"
                           f"subprocess.run([sys.executable, '-c', {WRITER!r}, *specs], "
                           "check=True)\n"]},
            params_schema=[{"name": "files", "type": "string", "max_length": 2000}],
            artifact_globs=globs, timeout_seconds=60, **fields)

    return make


@pytest.fixture
def launch_files():
    def launch(task, files: str) -> Run:
        run, _ = run_launch(task=task, raw_params={"files": files}, actor=ACTOR)
        return execute(run)

    return launch
