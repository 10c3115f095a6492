"""Reads of artifacts and comparisons, with visibility enforced like runs.selectors: an
artifact of a project the user cannot see is NotFound, whatever its id."""

from __future__ import annotations

from django.db.models import QuerySet

from artifacts.models import Artifact, Comparison
from runs.models import Role, Run
from runs.selectors import visible_or_404


def artifact_get(user, artifact_id: int, *, minimum: str = Role.VIEWER) -> Artifact:
    artifact = (Artifact.objects
                .select_related("run", "run__project", "run__task", "execution",
                                "comparison", "comparison__baseline")
                .filter(pk=artifact_id).first())
    return visible_or_404(user, artifact, lambda a: a.run.project, minimum,
                          f"Artifact {artifact_id}")


def artifacts_of_run(run: Run) -> QuerySet[Artifact]:
    """A run's artifacts with what lists show (execution, comparison) in one query."""
    return (Artifact.objects.filter(run=run)
            .select_related("execution", "comparison")
            .order_by("execution__position", "execution__id", "attempt", "name"))


def comparison_picture_key(artifact: Artifact, picture: str) -> str | None:
    """The storage key of a comparison picture ("diff", "heatmap") or of the baseline image
    ("baseline"), or None when there is none."""
    try:
        comparison: Comparison = artifact.comparison
    except Comparison.DoesNotExist:
        return None
    if picture == "diff":
        return comparison.diff_key or None
    if picture == "heatmap":
        return comparison.heatmap_key or None
    if picture == "baseline" and comparison.baseline is not None:
        return comparison.baseline.storage_key
    return None
