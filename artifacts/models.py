"""Artifacts: files an execution produced, kept in the artifact storage, and their comparison
with the task's baseline run.

An Artifact row exists only for a file that is fully stored (collection uploads first, then
inserts the row under the execution's fencing check). Deleting a row deletes its files from
storage once the transaction commits (artifacts.signals), so a run, task or project deleted by
any path (prune, admin, cascade) leaves nothing behind in storage.
"""

from __future__ import annotations

from django.db import models
from django.urls import reverse

from runs.models import Execution, Run


class Artifact(models.Model):
    """One kept file of one attempt of an execution."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="artifacts")
    attempt = models.PositiveIntegerField()
    # The path relative to the working directory, with '/' separators ("shots/home.png").
    name = models.CharField(max_length=500)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=200)
    # Pixel size of a raster image (read from its header at collection), for the viewer.
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    # Where the bytes are in the artifact storage; never derived from client input.
    storage_key = models.CharField(max_length=1000, unique=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["run", "execution", "attempt", "name"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "attempt", "name"],
                                    name="artifact_unique_name")
        ]
        indexes = [models.Index(fields=["run", "id"], name="artifact_run_id")]

    def __str__(self) -> str:
        return f"{self.name} (run {self.run_id})"

    def get_absolute_url(self) -> str:
        return reverse("artifact_view", args=[self.pk])

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def is_image(self) -> bool:
        return self.content_type in INLINE_IMAGE_TYPES


# Image types a browser may render inline from our origin. SVG is deliberately absent: it can
# carry script, so it is only ever downloaded.
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


class DiffLevel(models.TextChoices):
    NONE = "none", "No difference"
    MINOR = "minor", "Minor difference"
    MAJOR = "major", "Major difference"

    @classmethod
    def worst(cls, levels) -> str:
        order = ["", cls.NONE, cls.MINOR, cls.MAJOR]
        return max(levels, key=order.index, default="")


class Comparison(models.Model):
    """An image artifact compared with the baseline run's artifact of the same name, stage,
    step and matrix cell: the share of differing pixels, its level, and two pictures."""

    artifact = models.OneToOneField(Artifact, on_delete=models.CASCADE,
                                    related_name="comparison")
    baseline = models.ForeignKey(Artifact, null=True, on_delete=models.SET_NULL,
                                 related_name="+")
    baseline_run = models.ForeignKey(Run, null=True, on_delete=models.SET_NULL, related_name="+")
    ratio = models.FloatField(null=True)  # null: could not compare (see note)
    differing_pixels = models.PositiveBigIntegerField(default=0)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    level = models.CharField(max_length=8, choices=DiffLevel.choices, blank=True)
    note = models.CharField(max_length=300, blank=True)
    diff_key = models.CharField(max_length=1000, blank=True)
    heatmap_key = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.artifact} vs baseline: {self.level or 'not compared'}"

    @property
    def percent(self) -> str:
        if self.ratio is None:
            return ""
        value = self.ratio * 100
        return f"{value:.3f}%" if value < 1 else f"{value:.1f}%"
