"""Where artifact bytes live: the `artifacts` entry of settings.STORAGES (the file system
under ARTIFACTS_ROOT, or S3-compatible storage), and the layout of keys in it.

    p<project>/r<run>/e<execution>/a<attempt>/<relative path>     a collected file
    p<project>/r<run>/compare/<artifact id>-diff.png               its comparison pictures

Keys are built from database ids and the collected file's relative path only, never from a
request, and every download looks the key up in the database: there is no way to name a key
from outside.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.core.files.storage import Storage, storages

logger = logging.getLogger(__name__)


def artifact_storage() -> Storage:
    return storages["artifacts"]


def run_prefix(project_id: int, run_id: int) -> str:
    return f"p{project_id}/r{run_id}/"


def attempt_prefix(project_id: int, run_id: int, execution_id: int, attempt: int) -> str:
    return f"{run_prefix(project_id, run_id)}e{execution_id}/a{attempt}/"


def comparison_key(project_id: int, run_id: int, artifact_id: int, picture: str) -> str:
    return f"{run_prefix(project_id, run_id)}compare/{artifact_id}-{picture}.png"


def keys_delete(keys: list[str]) -> int:
    """Delete these keys from storage; a key already gone is fine. Returns how many were
    there. A failure is logged and left for `prune` (which sweeps unreferenced keys)."""
    storage = artifact_storage()
    deleted = 0
    for key in keys:
        if not key:
            continue
        try:
            if storage.exists(key):
                storage.delete(key)
                deleted += 1
        except Exception:
            logger.exception("could not delete artifact key %s; prune will retry", key)
    return deleted


def keys_under(prefix: str) -> Iterator[str]:
    """Every key under a prefix ('' for all), walking directories as the storage lists them."""
    storage = artifact_storage()
    try:
        directories, files = storage.listdir(prefix.rstrip("/") if prefix else "")
    except (FileNotFoundError, NotADirectoryError):
        return
    base = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    for name in files:
        yield f"{base}{name}"
    for directory in directories:
        yield from keys_under(f"{base}{directory}/")
