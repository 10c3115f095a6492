"""Retention: which finished runs a project's policy says to delete, deleting them with
everything they kept, and sweeping storage keys that no row refers to.

Policy (Project.retention_days, Project.retention_runs; either may be empty):
- a finished run whose end is older than `retention_days` days is deleted;
- of each task's finished runs, all but the newest `retention_runs` are deleted.
Never deleted: runs that have not finished, and a task's baseline run (later runs are compared
with it). Deleting a run deletes its executions, logs, events, artifacts and comparisons; the
files go from storage with their rows (artifacts.signals).

Orphan sweep: a key under p<project>/r<run>/ whose run no longer exists, or which no Artifact
or Comparison row names and is older than an hour (so a worker still uploading is never
raced), is deleted: left by a worker that died between upload and insert, or a failed delete.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber

from artifacts.models import Artifact, Comparison
from artifacts.storage import artifact_storage, keys_delete, keys_under
from runs.models import RUN_TERMINAL, Project, Run, Task

logger = logging.getLogger(__name__)

ORPHAN_GRACE = timedelta(hours=1)
RUN_DIR = re.compile(r"^p(\d+)/r(\d+)/$")


@dataclass
class PruneReport:
    runs: list[tuple[int, str, str]] = field(default_factory=list)  # (run id, project, why)
    files: int = 0
    bytes: int = 0
    orphan_keys: list[str] = field(default_factory=list)


def prune_candidates(project: Project, *, now: datetime) -> list[tuple[int, str]]:
    """(run id, reason) of the project's runs its policy says to delete, oldest first."""
    if project.retention_days is None and project.retention_runs is None:
        return []
    keep = set(Task.objects.filter(project=project, baseline_run__isnull=False)
               .values_list("baseline_run_id", flat=True))
    finished = Run.objects.filter(project=project, status__in=RUN_TERMINAL).exclude(pk__in=keep)
    found: dict[int, str] = {}
    if project.retention_days is not None:
        cutoff = now - timedelta(days=project.retention_days)
        # A run that ended without a recorded end time (never started) counts from creation.
        old = finished.filter(Q(finished_at__lt=cutoff)
                              | Q(finished_at__isnull=True, created_at__lt=cutoff))
        for run_id in old.values_list("pk", flat=True):
            found[run_id] = f"finished more than {project.retention_days} days ago"
    if project.retention_runs is not None:
        # Rank finished runs per task, newest first; the baseline still counts as one kept.
        ranked = (Run.objects.filter(project=project, status__in=RUN_TERMINAL)
                  .annotate(rank=Window(RowNumber(), partition_by=[F("task_id")],
                                        order_by=F("id").desc()))
                  .values_list("pk", "rank"))
        for run_id, rank in ranked:
            if rank > project.retention_runs and run_id not in keep:
                found.setdefault(run_id, f"beyond the newest {project.retention_runs} "
                                         "finished runs of its task")
    return sorted(found.items())


def prune(*, now: datetime, dry_run: bool = False, sweep: bool = True) -> PruneReport:
    """Apply every project's retention policy (see the module docstring)."""
    report = PruneReport()
    for project in Project.objects.filter(
            Q(retention_days__isnull=False) | Q(retention_runs__isnull=False)).order_by("pk"):
        candidates = prune_candidates(project, now=now)
        for run_id, why in candidates:
            files = Artifact.objects.filter(run_id=run_id)
            report.files += files.count()
            report.bytes += sum(files.values_list("size", flat=True))
            report.runs.append((run_id, project.slug, why))
            if dry_run:
                continue
            with transaction.atomic():
                # Re-checked under the lock: it may have become a baseline meanwhile.
                run = Run.objects.select_for_update().filter(pk=run_id).first()
                if run is None or Task.objects.filter(baseline_run=run).exists():
                    continue
                run.delete()
    if sweep:
        report.orphan_keys = orphan_keys(now=now)
        if not dry_run:
            keys_delete(report.orphan_keys)
    return report


def orphan_keys(*, now: datetime) -> list[str]:
    """Storage keys under run prefixes that no row refers to (see the module docstring)."""
    storage = artifact_storage()
    orphans: list[str] = []
    try:
        projects, _ = storage.listdir("")
    except (FileNotFoundError, NotADirectoryError):
        return []
    for project_dir in sorted(projects):
        try:
            run_dirs, _ = storage.listdir(project_dir)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for run_dir in sorted(run_dirs):
            prefix = f"{project_dir}/{run_dir}/"
            match = RUN_DIR.match(prefix)
            if match is None:
                continue
            run_id = int(match.group(2))
            keys = list(keys_under(prefix))
            if not Run.objects.filter(pk=run_id).exists():
                orphans.extend(keys)
                continue
            known = set(Artifact.objects.filter(run_id=run_id)
                        .values_list("storage_key", flat=True))
            for diff_key, heat_key in Comparison.objects.filter(
                    artifact__run_id=run_id).values_list("diff_key", "heatmap_key"):
                known.update((diff_key, heat_key))
            for key in keys:
                if key in known:
                    continue
                try:
                    modified = storage.get_modified_time(key)
                except (OSError, NotImplementedError):
                    continue
                if now - modified > ORPHAN_GRACE:
                    orphans.append(key)
    return orphans
