"""What every page's template gets besides Django's own: the no-worker banner.

Context processors run for every template rendered with a request, htmx fragments included, so
this one hands over a lazy object: the queries run only when a template reads it (base.html
does; the fragments do not).
"""

from __future__ import annotations

from functools import cached_property

from django.http import HttpRequest

from runs import selectors


class WorkerBanner:
    """`waiting`: executions of the viewer's projects waiting while no worker is alive (0 when
    a worker is alive, or nothing waits). One cached query in the common case (a worker is
    alive), two when none is."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request

    @cached_property
    def waiting(self) -> int:
        user = getattr(self.request, "user", None)
        if user is None or not user.is_authenticated:
            return 0
        if selectors.workers_alive_any():
            return 0
        return selectors.executions_waiting_count(user)


def worker_banner(request: HttpRequest) -> dict[str, WorkerBanner]:
    return {"worker_banner": WorkerBanner(request)}
