"""Orphan sweep: kill command processes whose attempt is over.

A command dies with its worker (PR_SET_PDEATHSIG), but its own children do not: when a worker
is SIGKILLed, grandchildren that stayed in the process group run on while the reaper retries
the execution elsewhere. Every command carries SWITCHYARD_WORKER, SWITCHYARD_EXECUTION_ID,
SWITCHYARD_ATTEMPT and SWITCHYARD_DATABASE in its environment; this module scans /proc on this
machine and SIGKILLs any such process whose worker process is gone or whose attempt is no longer
the execution's current running attempt. It runs with each reaper pass and when a worker starts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from pathlib import Path

from django.db import connection

from runs.models import Execution, ExecutionStatus

logger = logging.getLogger(__name__)
PROC = Path("/proc")


def database_marker() -> str:
    """Identifies this installation's database, so a sweep never touches another's commands."""
    db = connection.settings_dict
    raw = f"{connection.vendor}:{db.get('HOST') or ''}:{db.get('PORT') or ''}:{db.get('NAME')}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _commands() -> list[tuple[int, str, int, int]]:
    """(pid, worker, execution id, attempt) of Switchyard commands on this machine."""
    marker = database_marker().encode()
    found = []
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if b"SWITCHYARD_EXECUTION_ID=" not in raw:
            continue
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        if env.get(b"SWITCHYARD_DATABASE") != marker:
            continue
        try:
            found.append((int(entry.name), env[b"SWITCHYARD_WORKER"].decode(),
                          int(env[b"SWITCHYARD_EXECUTION_ID"]), int(env[b"SWITCHYARD_ATTEMPT"])))
        except (KeyError, ValueError, UnicodeDecodeError):
            continue
    return found


def _worker_alive(worker: str) -> bool:
    try:
        pid = int(worker.rsplit(":", 1)[1])
        os.kill(pid, 0)
        return True
    except (IndexError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def orphans_kill() -> int:
    """SIGKILL this machine's command processes whose attempt is over. Returns how many."""
    commands = _commands()
    if not commands:
        return 0
    current = {
        (pk, attempt) for pk, attempt in Execution.objects.filter(
            pk__in={c[2] for c in commands}, status=ExecutionStatus.RUNNING
        ).values_list("pk", "attempt")
    }
    killed = 0
    for pid, worker, execution_id, attempt in commands:
        if (execution_id, attempt) in current and _worker_alive(worker):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
            logger.warning("killed orphan process %s of execution %s attempt %s (worker %s)",
                           pid, execution_id, attempt, worker)
        except (ProcessLookupError, PermissionError):
            pass
    return killed
