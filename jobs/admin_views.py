"""The workers and queue page of the back office (/admin/workers/): a read-only view over
`jobs.selectors.queue_overview`, with links into the admin lists and django-q2's own pages.

The page works without JavaScript (a Refresh link); with it, htmx reloads the body every
REFRESH_SECONDS while the tab is visible, and at once when the tab becomes visible again.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from config.admin_site import WORKERS_PERMISSION
from jobs.selectors import queue_overview

REFRESH_SECONDS = 10


def workers_queue(request: HttpRequest) -> HttpResponse:
    """Staff with the worker registry's view permission (superusers have it) see the page."""
    if not request.user.has_perm(WORKERS_PERMISSION):
        raise PermissionDenied
    context = {
        "overview": queue_overview(),
        "refresh_seconds": REFRESH_SECONDS,
        "lease_seconds": settings.SWITCHYARD_LEASE_SECONDS,
        "dead_seconds": settings.SWITCHYARD_WORKER_DEAD_SECONDS,
    }
    if getattr(request, "htmx", False):
        return TemplateResponse(request, "admin/jobs/partials/workers_body.html", context)
    return TemplateResponse(request, "admin/jobs/workers.html", {
        **admin.site.each_context(request),
        **context,
        "title": "Workers and queue",
    })
