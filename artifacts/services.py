"""Writes of the artifacts app: comparing image artifacts with a task's baseline, marking and
clearing baselines, and deleting runs with everything they kept."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from artifacts.imagediff import NotComparable, diff_level, image_diff
from artifacts.models import INLINE_IMAGE_TYPES, Artifact, Comparison, DiffLevel
from artifacts.storage import artifact_storage, comparison_key, keys_delete
from runs.errors import Conflict
from runs.models import Run, Task
from runs.transitions import Actor, audit_write, event_append

logger = logging.getLogger(__name__)


def _cell_key(artifact: Artifact) -> tuple[str, str, str, str]:
    """What makes two artifacts counterparts: stage, step, matrix cell and name."""
    execution = artifact.execution
    return (execution.stage, execution.step, json.dumps(execution.matrix, sort_keys=True),
            artifact.name)


def _baseline_index(baseline_run_id: int) -> dict[tuple, Artifact]:
    """The baseline run's image artifacts by cell key; for a cell run more than once (loops,
    retries) the latest iteration and attempt wins."""
    index: dict[tuple, Artifact] = {}
    rows = (Artifact.objects.filter(run_id=baseline_run_id, content_type__in=INLINE_IMAGE_TYPES)
            .select_related("execution")
            .order_by("execution__iteration", "attempt", "id"))
    for artifact in rows:
        index[_cell_key(artifact)] = artifact
    return index


def _latest_images(artifacts: Iterable[Artifact]) -> list[Artifact]:
    """Of several attempts of one cell, only the latest one's images are compared."""
    latest: dict[tuple, Artifact] = {}
    for artifact in sorted(artifacts, key=lambda a: (a.execution.iteration, a.attempt, a.pk)):
        if artifact.content_type in INLINE_IMAGE_TYPES:
            latest[_cell_key(artifact)] = artifact
    return list(latest.values())


def _read(key: str) -> bytes:
    with artifact_storage().open(key, "rb") as handle:
        return handle.read()


def _comparison_replace(artifact: Artifact, **fields) -> Comparison:
    old = Comparison.objects.filter(artifact=artifact).first()
    if old is not None:
        old.delete()  # its pictures go with it (signals)
    return Comparison.objects.create(artifact=artifact, created_at=timezone.now(), **fields)


def artifact_compare(artifact: Artifact, task: Task, index: dict[tuple, Artifact]
                     ) -> Comparison:
    """Compare one image artifact with its counterpart in the baseline index and store the
    result (replacing an earlier comparison of the same artifact)."""
    run = artifact.run
    counterpart = index.get(_cell_key(artifact))
    if counterpart is None:
        where = artifact.execution.step or artifact.execution.name
        return _comparison_replace(
            artifact, baseline=None, baseline_run_id=task.baseline_run_id, ratio=None,
            level="", note=f"the baseline run has no image {artifact.name!r} for {where}"
                           + (f" {artifact.execution.matrix}" if artifact.execution.matrix
                              else ""))
    try:
        result = image_diff(_read(artifact.storage_key), _read(counterpart.storage_key),
                            tolerance=task.diff_pixel_tolerance,
                            max_pixels=settings.SWITCHYARD_DIFF_MAX_PIXELS)
    except (NotComparable, OSError) as exc:
        return _comparison_replace(artifact, baseline=counterpart,
                                   baseline_run_id=task.baseline_run_id, ratio=None, level="",
                                   note=str(exc)[:300])
    storage = artifact_storage()
    diff_key = storage.save(comparison_key(run.project_id, run.pk, artifact.pk, "diff"),
                            ContentFile(result.diff_png))
    heat_key = storage.save(comparison_key(run.project_id, run.pk, artifact.pk, "heatmap"),
                            ContentFile(result.heatmap_png))
    try:
        return _comparison_replace(
            artifact, baseline=counterpart, baseline_run_id=task.baseline_run_id,
            ratio=result.ratio, differing_pixels=result.differing_pixels, width=result.width,
            height=result.height,
            level=diff_level(result.ratio, minor=task.diff_minor_ratio,
                             major=task.diff_major_ratio),
            note=result.note[:300], diff_key=diff_key, heatmap_key=heat_key)
    except Exception:
        keys_delete([diff_key, heat_key])
        raise


def run_visual_diff_refresh(run_id: int) -> str:
    """Store the run's worst comparison level on the run (for list badges), counting only the
    latest attempt of each cell: a failed first try's image does not mark a run whose retry
    matched the baseline."""
    comparisons = (Comparison.objects.filter(artifact__run_id=run_id)
                   .select_related("artifact__execution"))
    latest: dict[tuple, tuple] = {}
    for comparison in comparisons:
        artifact = comparison.artifact
        order = (artifact.execution.iteration, artifact.attempt, artifact.pk)
        key = _cell_key(artifact)
        if key not in latest or order > latest[key][0]:
            latest[key] = (order, comparison.level)
    worst = DiffLevel.worst({level for _order, level in latest.values()})
    Run.objects.filter(pk=run_id).exclude(visual_diff=worst).update(visual_diff=worst)
    return worst


def artifacts_compare(artifacts: list[Artifact]) -> list[Comparison]:
    """Compare these artifacts (of one run) with their task's current baseline, if it has
    one and it is another run. Used by the worker after collection and by "compare again"."""
    if not artifacts:
        return []
    run = artifacts[0].run
    task = Task.objects.get(pk=run.task_id)
    if task.baseline_run_id is None or task.baseline_run_id == run.pk:
        return []
    index = _baseline_index(task.baseline_run_id)
    done = []
    for artifact in _latest_images(artifacts):
        try:
            done.append(artifact_compare(artifact, task, index))
        except Exception:
            # A comparison is derived data: it must never fail the attempt that produced
            # the file. The run page offers to compare again.
            logger.exception("comparing artifact %s with the baseline failed", artifact.pk)
    run_visual_diff_refresh(run.pk)
    return done


def run_compare(run: Run, *, actor: Actor) -> list[Comparison]:
    """Compare every image of a finished run with its task's current baseline again."""
    task = Task.objects.get(pk=run.task_id)
    if task.baseline_run_id is None:
        raise Conflict(f"Task {task.slug!r} has no baseline run; mark one first.")
    if task.baseline_run_id == run.pk:
        raise Conflict("This run is the baseline itself.")
    artifacts = list(Artifact.objects.filter(run=run).select_related("execution", "run"))
    # Comparisons with an older baseline are replaced, and stale ones of files that are no
    # longer the latest attempt's go too.
    Comparison.objects.filter(artifact__run=run).delete()
    done = artifacts_compare(artifacts)
    run_visual_diff_refresh(run.pk)
    audit_write(actor=actor, action="run.compare", obj=run, now=timezone.now(),
                project_id=run.project_id,
                changes={"baseline_run": task.baseline_run_id, "compared": len(done)})
    return done


def baseline_set(run: Run, *, actor: Actor) -> Task:
    """Make `run` the baseline of its task. It must have finished; it is then never pruned."""
    if not run.is_terminal:
        raise Conflict(f"Run {run.pk} is {run.status}; only a finished run can be the "
                       "baseline.")
    now = timezone.now()
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=run.task_id)
        previous = task.baseline_run_id
        if previous == run.pk:
            return task
        task.baseline_run = run
        task.save(update_fields=["baseline_run", "updated_at"])
        Run.objects.filter(pk=run.pk).update(visual_diff="")
        event_append(run.pk, "run.baseline", f"Marked as the baseline of task {task.slug}.",
                     now=now, actor=actor)
        audit_write(actor=actor, action="task.baseline", obj=task, now=now,
                    project_id=task.project_id,
                    changes={"baseline_run": [previous, run.pk]})
    Comparison.objects.filter(artifact__run=run).delete()  # a baseline compares to nothing
    return task


def baseline_clear(task: Task, *, actor: Actor) -> Task:
    now = timezone.now()
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=task.pk)
        previous = task.baseline_run_id
        if previous is None:
            return task
        task.baseline_run = None
        task.save(update_fields=["baseline_run", "updated_at"])
        audit_write(actor=actor, action="task.baseline", obj=task, now=now,
                    project_id=task.project_id, changes={"baseline_run": [previous, None]})
    return task
