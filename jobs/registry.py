"""Worker registration, liveness heartbeats and graceful drain.

Each django-q2 pool process registers itself when it spawns (q2's post_spawn signal), then a
daemon thread refreshes `last_seen_at`. A worker is alive while its row is fresh. On SIGTERM a
worker marks itself draining and keeps running its current execution; the q2 cluster stops
handing it work and lets it exit when done (graceful drain).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from jobs.models import WorkerProcess
from jobs.worker import worker_id

logger = logging.getLogger(__name__)

_state = {"registered": False, "draining": False}


def worker_draining() -> bool:
    """True once this worker process got SIGTERM: it finishes its execution, starts none."""
    return _state["draining"]


def workers_alive(*, now: datetime | None = None) -> QuerySet[WorkerProcess]:
    """Workers whose heartbeat is recent enough to count as alive."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.SWITCHYARD_WORKER_DEAD_SECONDS)
    return WorkerProcess.objects.filter(stopped_at__isnull=True, last_seen_at__gte=cutoff)


def worker_register(*, now: datetime | None = None) -> WorkerProcess:
    """Create or refresh this process's registry row."""
    now = now or timezone.now()
    row, _ = WorkerProcess.objects.update_or_create(
        name=worker_id(),
        defaults={"host": socket.gethostname(), "pid": os.getpid(), "started_at": now,
                  "last_seen_at": now, "stopped_at": None, "draining": False},
    )
    return row


def worker_seen(*, now: datetime | None = None) -> None:
    now = now or timezone.now()
    WorkerProcess.objects.filter(name=worker_id()).update(
        last_seen_at=now, draining=_state["draining"]
    )


def worker_stopped() -> None:
    WorkerProcess.objects.filter(name=worker_id()).update(stopped_at=timezone.now())


def _beat_forever(interval: float) -> None:
    from jobs.reaper import reap_if_due

    while True:
        threading.Event().wait(interval)
        try:
            worker_seen()
            if not _state["draining"]:
                reap_if_due()
        except Exception:  # a database blip must not kill the thread; next beat retries
            logger.exception("worker heartbeat or reaper pass failed")
            connection.close()


def _drain(signum, frame) -> None:
    # Keep running the current execution; q2's sentinel stops feeding this process and
    # sends it a STOP once the cluster shuts down.
    _state["draining"] = True
    logger.info("worker %s draining: finishing its current execution", worker_id())


def on_worker_spawn(sender, proc_name: str | None = None, **kwargs) -> None:
    """q2 post_spawn receiver, run inside each new pool process."""
    if _state["registered"]:
        return
    _state["registered"] = True
    signal.signal(signal.SIGTERM, _drain)
    try:
        worker_register()
        from jobs.orphans import orphans_kill

        orphans_kill()  # leftovers of a worker that died on this machine before we started
    except Exception:
        logger.exception("worker registration failed; heartbeats will retry")
    finally:
        connection.close()  # the pool process opens its own when the first task runs
    threading.Thread(target=_beat_forever, args=(settings.SWITCHYARD_WORKER_BEAT_SECONDS,),
                     name="worker-registry", daemon=True).start()
