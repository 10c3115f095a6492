"""REST endpoints for artifacts: list a run's files, read one, download it, fetch its
comparison pictures; mark or clear a task's baseline; compare a run again."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from django.urls import reverse
from ninja import Path, Query, Router, Schema

from artifacts import selectors as artifact_selectors
from artifacts.models import Artifact, Comparison
from artifacts.responses import artifact_download, picture_response
from artifacts.services import baseline_clear, baseline_set, run_compare
from runs import selectors
from runs.api import actor_for
from runs.errors import NotFound
from runs.models import Role
from runs.schemas import ErrorOut

router = Router(tags=["artifacts"])

READ = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut}
WRITE = {**READ, 403: ErrorOut, 409: ErrorOut}
ID = Path(..., ge=1)


class ComparisonOut(Schema):
    level: Literal["none", "minor", "major", ""]
    ratio: float | None
    differing_pixels: int
    width: int
    height: int
    note: str
    baseline_run: int | None
    baseline_artifact: int | None
    diff_url: str | None
    heatmap_url: str | None
    baseline_url: str | None


class ArtifactOut(Schema):
    id: int
    run: int
    execution: int
    execution_name: str
    stage: str
    step: str
    matrix: dict[str, Any]
    attempt: int
    name: str
    size: int
    sha256: str
    content_type: str
    created_at: datetime
    download_url: str
    view_url: str
    comparison: ComparisonOut | None


class ArtifactPage(Schema):
    items: list[ArtifactOut]
    next_cursor: str | None = None


class BaselineOut(Schema):
    project: str
    task: str
    baseline_run: int | None


class ComparisonsOut(Schema):
    run: int
    visual_diff: str
    items: list[ArtifactOut]


def _comparison_out(request: HttpRequest, artifact: Artifact) -> dict | None:
    try:
        comparison: Comparison = artifact.comparison
    except Comparison.DoesNotExist:
        return None

    def url(picture: str, present: bool) -> str | None:
        if not present:
            return None
        return request.build_absolute_uri(
            reverse("api:artifacts_picture", kwargs={"artifact_id": artifact.pk,
                                                     "picture": picture}))

    return {
        "level": comparison.level, "ratio": comparison.ratio,
        "differing_pixels": comparison.differing_pixels, "width": comparison.width,
        "height": comparison.height, "note": comparison.note,
        "baseline_run": comparison.baseline_run_id,
        "baseline_artifact": comparison.baseline_id,
        "diff_url": url("diff", bool(comparison.diff_key)),
        "heatmap_url": url("heatmap", bool(comparison.heatmap_key)),
        "baseline_url": url("baseline", comparison.baseline_id is not None),
    }


def artifact_out(request: HttpRequest, artifact: Artifact) -> dict:
    execution = artifact.execution
    return {
        "id": artifact.pk, "run": artifact.run_id, "execution": artifact.execution_id,
        "execution_name": execution.name, "stage": execution.stage, "step": execution.step,
        "matrix": execution.matrix, "attempt": artifact.attempt, "name": artifact.name,
        "size": artifact.size, "sha256": artifact.sha256,
        "content_type": artifact.content_type, "created_at": artifact.created_at,
        "download_url": request.build_absolute_uri(
            reverse("api:artifacts_download", kwargs={"artifact_id": artifact.pk})),
        "view_url": request.build_absolute_uri(artifact.get_absolute_url()),
        "comparison": _comparison_out(request, artifact),
    }


@router.get("/runs/{int:run_id}/artifacts", response={200: ArtifactPage, **READ},
            operation_id="runs_artifacts_list")
def runs_artifacts_list(request: HttpRequest, run_id: int = ID, cursor: str | None = None,
                        limit: int = Query(100, ge=1, le=200)):
    """The run's kept files, newest first, each with its comparison with the baseline."""
    run = selectors.run_get(request.user, run_id)
    rows, next_cursor = selectors.keyset_page(
        artifact_selectors.artifacts_of_run(run), cursor=cursor, limit=limit)
    return {"items": [artifact_out(request, a) for a in rows], "next_cursor": next_cursor}


@router.get("/artifacts/{int:artifact_id}", response={200: ArtifactOut, **READ},
            operation_id="artifacts_get")
def artifacts_get(request: HttpRequest, artifact_id: int = ID):
    return artifact_out(request, artifact_selectors.artifact_get(request.user, artifact_id))


def _binary(description: str, media: str = "application/octet-stream") -> dict[str, Any]:
    # django-ninja has no model for a binary body; declare the 200 in the OpenAPI document.
    return {"responses": {200: {"description": description, "content": {
        media: {"schema": {"type": "string", "format": "binary"}}}}}}


@router.get("/artifacts/{int:artifact_id}/download", response={200: None, 304: None, **READ},
            operation_id="artifacts_download",
            openapi_extra=_binary("The file's bytes, as an attachment named after it; "
                                  "`ETag` is its sha256 (send `If-None-Match` for a 304)."))
def artifacts_download(request: HttpRequest, artifact_id: int = ID):
    artifact = artifact_selectors.artifact_get(request.user, artifact_id)
    return artifact_download(request, artifact)


@router.get("/artifacts/{int:artifact_id}/comparison/{picture}",
            response={200: None, 304: None, **READ}, operation_id="artifacts_picture",
            url_name="artifacts_picture",
            openapi_extra=_binary("A PNG: the diff (differing pixels in magenta over the "
                                  "faded image), the heatmap, or the baseline image.",
                                  "image/png"))
def artifacts_picture(request: HttpRequest, picture: Literal["diff", "heatmap", "baseline"],
                      artifact_id: int = ID):
    artifact = artifact_selectors.artifact_get(request.user, artifact_id)
    key = artifact_selectors.comparison_picture_key(artifact, picture)
    if key is None:
        raise NotFound(f"Artifact {artifact_id} has no {picture} picture: it was not compared "
                       "with a baseline image.")
    return picture_response(request, artifact, picture, key)


@router.post("/runs/{int:run_id}/baseline", response={200: BaselineOut, **WRITE},
             operation_id="runs_baseline_set")
def runs_baseline_set(request: HttpRequest, run_id: int = ID):
    """Make this finished run the baseline of its task (operator); later runs' images are
    compared with its images."""
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)
    task = baseline_set(run, actor=actor_for(request))
    return {"project": run.project.slug, "task": task.slug, "baseline_run": task.baseline_run_id}


@router.delete("/projects/{project}/tasks/{task}/baseline", response={200: BaselineOut, **WRITE},
               operation_id="tasks_baseline_clear")
def tasks_baseline_clear(request: HttpRequest, project: str, task: str):
    task_obj = selectors.task_get(request.user, project, task, minimum=Role.OPERATOR)
    task_obj = baseline_clear(task_obj, actor=actor_for(request))
    return {"project": project, "task": task_obj.slug, "baseline_run": None}


@router.post("/runs/{int:run_id}/compare", response={200: ComparisonsOut, **WRITE},
             operation_id="runs_compare")
def runs_compare(request: HttpRequest, run_id: int = ID):
    """Compare the run's images with its task's current baseline again (operator)."""
    run = selectors.run_get(request.user, run_id, minimum=Role.OPERATOR)
    run_compare(run, actor=actor_for(request))
    run.refresh_from_db(fields=["visual_diff"])
    rows = artifact_selectors.artifacts_of_run(run).filter(comparison__isnull=False)
    return {"run": run.pk, "visual_diff": run.visual_diff,
            "items": [artifact_out(request, a) for a in rows]}
