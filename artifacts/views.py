"""Pages of artifacts: a run's file list (a section of the run page, refreshed while the run
is live), the viewer (text with line numbers, pretty JSON, CSV as a table, images, and for a
compared image the modes observed, baseline, diff, heatmap, slider and onion skin), the
permission-checked downloads, and the baseline controls (mark, clear, compare again) and run
deletion. Visibility and roles go through the selectors, changes through artifacts.services."""

from __future__ import annotations

import csv
import io
import json

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from artifacts import selectors as artifact_selectors
from artifacts.models import Artifact, Comparison, DiffLevel
from artifacts.responses import artifact_download, picture_response
from artifacts.services import baseline_clear, baseline_set, run_compare
from artifacts.storage import artifact_storage
from runs import selectors
from runs.control_views import _control_apply, control
from runs.errors import Conflict
from runs.models import Role, Run, Task
from runs.services import run_delete
from runs.views import actor_for, after_post, page

PREVIEW_BYTES = 2 * 1024 * 1024
CSV_ROWS = 1000
CSV_COLUMNS = 100
CSV_CELLS = 50_000
TEXT_TYPES = ("application/json", "application/xml", "application/x-ndjson",
              "application/javascript", "application/x-yaml", "application/yaml",
              "application/toml", "application/x-sh")


def _size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def run_artifacts_context(run: Run, role: str | None) -> dict:
    """What the run page's Artifacts section shows; shared by the page and its refresh."""
    rows = list(artifact_selectors.artifacts_of_run(run))
    for artifact in rows:
        artifact.size_text = _size_text(artifact.size)
        try:
            artifact.cmp = artifact.comparison
        except Comparison.DoesNotExist:
            artifact.cmp = None
    groups: list[dict] = []
    for artifact in rows:
        execution = artifact.execution
        if not groups or groups[-1]["execution"].pk != execution.pk or \
                groups[-1]["attempt"] != artifact.attempt:
            groups.append({"execution": execution, "attempt": artifact.attempt, "files": []})
        groups[-1]["files"].append(artifact)
    task_baseline = run.task.baseline_run_id  # the run's task is loaded with the run
    has_images = any(a.is_image for a in rows)
    can_operate = role is not None and Role.rank(role) >= Role.rank(Role.OPERATOR)
    return {
        "run": run,
        "artifact_groups": groups,
        "artifact_count": len(rows),
        "artifact_bytes": _size_text(sum(a.size for a in rows)),
        "is_baseline": task_baseline == run.pk,
        "task_baseline": task_baseline,
        "compared_with": {a.cmp.baseline_run_id for a in rows if a.cmp},
        "has_images": has_images,
        "can_operate": can_operate,
        "can_delete": role == Role.MAINTAINER and run.is_terminal and task_baseline != run.pk,
        "artifacts_live": not run.is_terminal,
        "level_labels": dict(DiffLevel.choices),
    }


@require_GET
@page
def run_artifacts(request: HttpRequest, run_id: int) -> HttpResponse:
    """The Artifacts section alone: the run page polls it while the run is live."""
    run = selectors.run_get(request.user, run_id)
    role = selectors.role_of(request.user, run.project)
    return render(request, "artifacts/partials/run_artifacts.html",
                  run_artifacts_context(run, role))


def _is_text(artifact: Artifact) -> bool:
    return artifact.content_type.startswith("text/") or artifact.content_type in TEXT_TYPES


def _preview(artifact: Artifact) -> dict:
    """The viewer's body for non-image files: lines, a table, or nothing to preview."""
    if not _is_text(artifact):
        return {"kind": "none"}
    try:
        with artifact_storage().open(artifact.storage_key, "rb") as handle:
            data = handle.read(PREVIEW_BYTES + 1)
    except OSError:
        return {"kind": "missing"}
    truncated = len(data) > PREVIEW_BYTES
    text = data[:PREVIEW_BYTES].decode("utf-8", errors="replace")
    note = (f"Showing the first {_size_text(PREVIEW_BYTES)} of {_size_text(artifact.size)}; "
            "download the file for all of it." if truncated else "")
    name = artifact.name.lower()
    if (artifact.content_type == "application/json" or name.endswith(".json")) and \
            not truncated:
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=False)
            return {"kind": "text", "lines": text.splitlines(), "note": note,
                    "label": "JSON, formatted"}
        except ValueError as exc:
            note = f"This is not valid JSON ({exc}); shown as it is."
        except RecursionError:
            note = "This JSON is nested too deeply to format; shown as it is."
    if artifact.content_type == "text/csv" or name.endswith(".csv"):
        rows = []
        reader = csv.reader(io.StringIO(text))
        try:
            for index, row in enumerate(reader):
                if index > CSV_ROWS:
                    note = note or f"Showing the first {CSV_ROWS} rows; download the file " \
                                   "for all of them."
                    break
                rows.append(row)
        except csv.Error as exc:
            return {"kind": "text", "lines": text.splitlines(), "label": "text",
                    "note": f"This CSV could not be read as a table ({exc}); shown as text."}
        # Bounded by columns and cells, never padded: one very wide row must not turn a small
        # file into a huge page.
        if any(len(r) > CSV_COLUMNS for r in rows):
            note = (note + " " if note else "") + (
                f"Showing the first {CSV_COLUMNS} columns; download the file for all of them.")
            rows = [r[:CSV_COLUMNS] for r in rows]
        cells, kept_rows = 0, []
        for row in rows:
            cells += len(row)
            if cells > CSV_CELLS:
                note = (note + " " if note else "") + (
                    f"Showing the first {len(kept_rows)} rows; download the file for all.")
                break
            kept_rows.append(row)
        return {"kind": "table", "header": kept_rows[0] if kept_rows else [],
                "rows": kept_rows[1:], "note": note}
    return {"kind": "text", "lines": text.splitlines(), "note": note, "label": "text"}


@require_GET
@page
def artifact_view(request: HttpRequest, artifact_id: int) -> HttpResponse:
    artifact = artifact_selectors.artifact_get(request.user, artifact_id)
    run = artifact.run
    try:
        comparison = artifact.comparison
    except Comparison.DoesNotExist:
        comparison = None
    canvas = None
    if comparison is not None and comparison.baseline is not None and comparison.width:
        baseline = comparison.baseline
        canvas = {
            "width": comparison.width, "height": comparison.height,
            "observed_pct": 100.0 * (artifact.width or comparison.width) / comparison.width,
            "baseline_pct": 100.0 * (baseline.width or comparison.width) / comparison.width,
        }
    siblings = list(artifact_selectors.artifacts_of_run(run).select_related(None).only(
        "id", "name", "execution_id", "attempt"))
    index = next((i for i, a in enumerate(siblings) if a.pk == artifact.pk), 0)
    role = selectors.role_of(request.user, run.project)
    return render(request, "artifacts/artifact_view.html", {
        "artifact": artifact,
        "run": run,
        "execution": artifact.execution,
        "size_text": _size_text(artifact.size),
        "comparison": comparison,
        "canvas": canvas,
        "preview": {"kind": "image"} if artifact.is_image else _preview(artifact),
        "previous": siblings[index - 1] if index > 0 else None,
        "next": siblings[index + 1] if index + 1 < len(siblings) else None,
        "position": index + 1,
        "total": len(siblings),
        "can_operate": role is not None and Role.rank(role) >= Role.rank(Role.OPERATOR),
        "level_labels": dict(DiffLevel.choices),
        "nav": "runs",
    })


@require_GET
@page
def artifact_raw(request: HttpRequest, artifact_id: int, name: str = "") -> HttpResponseBase:
    """The file itself, found by id and visibility, never by path: the name in the URL must be
    the artifact's own (so a link says what it is), and is never used to read anything.
    `?inline=1` shows raster images in place."""
    artifact = artifact_selectors.artifact_get(request.user, artifact_id)
    if name != artifact.name:
        raise Http404(f"Artifact {artifact_id} is not named {name!r}.")
    return artifact_download(request, artifact, inline=request.GET.get("inline") == "1")


@require_GET
@page
def artifact_picture(request: HttpRequest, artifact_id: int, picture: str) -> HttpResponseBase:
    artifact = artifact_selectors.artifact_get(request.user, artifact_id)
    key = artifact_selectors.comparison_picture_key(artifact, picture)
    if key is None:
        raise Http404(f"This file has no {picture} picture.")
    return picture_response(request, artifact, picture, key)


@control
def run_baseline(request: HttpRequest, run_id: int) -> HttpResponseBase:
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)

    def move() -> str:
        task = baseline_set(run, actor=actor_for(request))
        return (f"Run #{run.pk} is now the baseline of {task.name}: images of later runs are "
                "compared with its images.")

    return _control_apply(request, run.pk, move)


@control
def run_baseline_clear(request: HttpRequest, run_id: int) -> HttpResponseBase:
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)

    def move() -> str:
        task = Task.objects.get(pk=run.task_id)
        if task.baseline_run_id != run.pk:
            raise Conflict(f"Run #{run.pk} is not the baseline of {task.name} any more.")
        baseline_clear(task, actor=actor_for(request))
        return f"{task.name} has no baseline now; later runs are not compared."

    return _control_apply(request, run.pk, move)


@control
def run_compare_view(request: HttpRequest, run_id: int) -> HttpResponseBase:
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)

    def move() -> str:
        done = run_compare(run, actor=actor_for(request))
        return f"Compared {len(done)} image(s) with the baseline run."

    return _control_apply(request, run.pk, move)


@control
def run_delete_view(request: HttpRequest, run_id: int) -> HttpResponseBase:
    run = selectors.run_get(request.user, run_id, minimum=Role.MAINTAINER)
    try:
        run_delete(run, actor=actor_for(request))
    except Conflict as exc:
        messages.error(request, exc.message)
        return after_post(request, reverse("run_detail", args=[run.pk]))
    messages.success(request, f"Run #{run_id} was deleted with its logs and artifacts.")
    return after_post(request, reverse("run_list") + f"?project={run.project.slug}")
