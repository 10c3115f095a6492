"""Collection: after each attempt, the files of its working directory that match the task's
artifact globs are stored and recorded as Artifacts.

Safety. The directory is walked without following links, and each file is opened with
O_NOFOLLOW and checked to be a regular file on the open descriptor, so neither a symlink
(`report.txt -> /etc/passwd`) nor a renamed directory can make Switchyard store a file from
outside the working directory. Switchyard's own input files (params.json, input.json and the
task's templated `files`) can hold secrets and are never kept.

Caps. Per file (SWITCHYARD_ARTIFACT_MAX_FILE_MB), per run (SWITCHYARD_ARTIFACT_MAX_RUN_MB,
counting what earlier executions kept) and a number of files per attempt
(SWITCHYARD_ARTIFACT_MAX_FILES). A file over a cap is not kept, and the note saying so goes to
the execution's log and the run's timeline.

Fencing. The bytes are stored first; the rows are inserted only while this attempt is still
the execution's current running attempt (under the run and execution row locks). A stale
worker's files are deleted again instead of being recorded.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from artifacts.globs import glob_matcher
from artifacts.models import INLINE_IMAGE_TYPES, Artifact
from artifacts.storage import artifact_storage, attempt_prefix, keys_delete
from runs.models import Execution, ExecutionStatus

# Written by Switchyard into every working directory; params.json holds secret values.
NEVER_KEPT = frozenset({"params.json", "input.json"})
MAX_NAME = 500
MB = 1024 * 1024

mimetypes.add_type("text/plain", ".log")
mimetypes.add_type("text/markdown", ".md")
mimetypes.add_type("application/x-ndjson", ".ndjson")


@dataclass
class CollectReport:
    kept: list[Artifact] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fenced: bool = False  # the attempt was no longer current: nothing recorded

    @property
    def bytes(self) -> int:
        return sum(a.size for a in self.kept)


def content_type_of(name: str, head: bytes) -> str:
    """The media type from the name, or text/plain for unnamed UTF-8 text."""
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if guessed and not encoding:
        return guessed
    if encoding:  # report.json.gz is a gzip file, not JSON
        return {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                "xz": "application/x-xz"}.get(encoding, "application/octet-stream")
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text/plain"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3:  # a character cut at the end of the sample
                return "text/plain"
    return "application/octet-stream"


def _candidates(workdir: Path, matches, excluded: set[str], deep: bool
                ) -> tuple[list[str], list[str]]:
    """Relative paths to keep, in order, and notes about matching files that are refused."""
    found, notes = [], []
    for root, dirnames, filenames in os.walk(workdir, followlinks=False):
        dirnames.sort()
        rel_root = os.path.relpath(root, workdir)
        for filename in sorted(filenames):
            rel = filename if rel_root == "." else f"{rel_root}/{filename}".replace(os.sep, "/")
            if not matches(rel):
                continue
            problem = _name_problem(rel)
            if problem:
                notes.append(f"{rel.encode('utf-8', 'backslashreplace').decode()!r} is not "
                             f"kept: {problem}")
                continue
            if rel in excluded:
                notes.append(f"{rel} is not kept: it is one of Switchyard's own input files, "
                             "which can hold secret parameters")
                continue
            found.append(rel)
        # Symlinked directories are listed in dirnames but os.walk does not enter them; say
        # so when some glob reaches into directories at all.
        for name in dirnames:
            if deep and os.path.islink(os.path.join(root, name)):
                rel = name if rel_root == "." else f"{rel_root}/{name}"
                notes.append(f"{rel}/ is not searched: it is a symbolic link, and only "
                                 "files inside the working directory are kept")
    return found, notes


def _name_problem(rel: str) -> str:
    """Why a file name cannot be kept as it is (it could not be stored, linked or shown)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return "its name contains control characters (a newline, a tab...)"
    if "\\" in rel:
        return "its name contains a backslash"
    return ""


def _image_size(handle) -> tuple[int | None, int | None]:
    """Width and height from the image header (Pillow reads no pixels for this)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(handle) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None, None


def _open_regular(path: Path) -> int | None:
    """A read descriptor on the file if it is a regular file (not a link), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:  # ELOOP: a symlink; or it vanished
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def artifacts_collect(*, execution: Execution, attempt: int, workdir: Path, globs: list[str],
                      excluded: set[str] | None = None, note=None) -> CollectReport:
    """Store and record the files of `workdir` matching `globs`; see the module docstring.

    `note` is called with each note as well (the worker passes its log writer's)."""
    report = CollectReport()
    if not globs:
        return report
    matches = glob_matcher(globs)
    excluded = NEVER_KEPT | (excluded or set())
    deep = any("/" in g for g in globs)
    names, report.notes = _candidates(workdir, matches, excluded, deep)
    run = execution.run
    max_file = settings.SWITCHYARD_ARTIFACT_MAX_FILE_MB * MB
    max_run = settings.SWITCHYARD_ARTIFACT_MAX_RUN_MB * MB
    run_used = Artifact.objects.filter(run_id=run.pk).aggregate(s=Sum("size"))["s"] or 0
    prefix = attempt_prefix(run.project_id, run.pk, execution.pk, attempt)
    now = timezone.now()
    stored: list[Artifact] = []
    for rel in names:
        if len(stored) >= settings.SWITCHYARD_ARTIFACT_MAX_FILES:
            report.notes.append(
                f"{len(names) - len(stored)} more matching files are not kept: at most "
                f"{settings.SWITCHYARD_ARTIFACT_MAX_FILES} files per attempt "
                "(SWITCHYARD_ARTIFACT_MAX_FILES)")
            break
        if len(rel) > MAX_NAME:
            report.notes.append(f"{rel[:80]}… is not kept: its path is longer than {MAX_NAME} "
                                "characters")
            continue
        fd = _open_regular(workdir / rel)
        if fd is None:
            report.notes.append(f"{rel} is not kept: it is a symbolic link or not a regular "
                                "file, and only regular files inside the working directory "
                                "are kept")
            continue
        try:
            row = _store_one(fd, rel, prefix=prefix, max_file=max_file, max_run=max_run,
                             run_used=run_used, notes=report.notes)
        except (OSError, SuspiciousFileOperation, ValueError) as exc:
            # One file that cannot be stored must not lose the others.
            report.notes.append(f"{rel} is not kept: it could not be stored ({exc})")
            continue
        if row is None:
            continue
        run_used += row.size
        row.run, row.execution, row.attempt, row.created_at = run, execution, attempt, now
        stored.append(row)
    if stored:
        try:
            report.kept, over = _record(execution.pk, attempt, stored, max_run)
        except Exception:
            keys_delete([a.storage_key for a in stored])  # nothing recorded: nothing kept
            raise
        if report.kept is None:
            report.fenced, report.kept = True, []
            keys_delete([a.storage_key for a in stored])
        for artifact in over:
            report.notes.append(
                f"{artifact.name} is not kept: the run's artifacts would exceed the per-run cap "
                f"of {settings.SWITCHYARD_ARTIFACT_MAX_RUN_MB} MB "
                "(SWITCHYARD_ARTIFACT_MAX_RUN_MB)")
        keys_delete([a.storage_key for a in over])
    if note:
        for message in report.notes:
            note(message)
    return report


def _store_one(fd: int, rel: str, *, prefix: str, max_file: int, max_run: int, run_used: int,
               notes: list[str]) -> Artifact | None:
    """Copy the file once, at most the size it had when opened, hashing as it goes, and store
    that copy: a file still growing cannot slip past the cap or store other bytes than the
    hash describes."""
    storage = artifact_storage()
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_file:
            notes.append(f"{rel} is not kept: {size / MB:.1f} MB is over the per-file cap of "
                         f"{settings.SWITCHYARD_ARTIFACT_MAX_FILE_MB} MB "
                         "(SWITCHYARD_ARTIFACT_MAX_FILE_MB)")
            return None
        if run_used + size > max_run:
            notes.append(f"{rel} is not kept: the run's artifacts would exceed the per-run cap "
                         f"of {settings.SWITCHYARD_ARTIFACT_MAX_RUN_MB} MB "
                         "(SWITCHYARD_ARTIFACT_MAX_RUN_MB)")
            return None
        digest = hashlib.sha256()
        with tempfile.SpooledTemporaryFile(max_size=8 * MB) as copy:
            left = size
            while left > 0:
                block = handle.read(min(MB, left))
                if not block:
                    break
                digest.update(block)
                copy.write(block)
                left -= len(block)
            size = size - left  # a file that shrank meanwhile: what was read
            copy.seek(0)
            head = copy.read(8192)
            content_type = content_type_of(rel, head)
            width = height = None
            if content_type in INLINE_IMAGE_TYPES:
                copy.seek(0)
                width, height = _image_size(copy)
            copy.seek(0)
            key = storage.save(prefix + rel, File(copy, name=rel))
    return Artifact(name=rel, size=size, sha256=digest.hexdigest(), content_type=content_type,
                    width=width, height=height, storage_key=key)


def _record(execution_id: int, attempt: int, rows: list[Artifact], max_run: int
            ) -> tuple[list[Artifact] | None, list[Artifact]]:
    """Insert the rows if the attempt is still current (None otherwise), checking the per-run
    cap again under the run's lock: executions of one run collect in parallel. Returns the
    rows kept and those over the cap."""
    from runs.transitions import _lock_execution

    with transaction.atomic():
        run, execution = _lock_execution(execution_id)
        if execution.attempt != attempt or execution.status != ExecutionStatus.RUNNING:
            return None, []
        used = Artifact.objects.filter(run_id=run.pk).aggregate(s=Sum("size"))["s"] or 0
        keep, over = [], []
        for row in rows:
            if used + row.size > max_run:
                over.append(row)
            else:
                used += row.size
                keep.append(row)
        return Artifact.objects.bulk_create(keep), over
