"""Identity of this worker process, as recorded on attempts and leases."""

from __future__ import annotations

import os
import socket


def worker_id() -> str:
    """host:pid, unique among live workers; overridable for tests and containers."""
    base = os.environ.get("SWITCHYARD_WORKER_ID") or socket.gethostname()
    return f"{base}:{os.getpid()}"
