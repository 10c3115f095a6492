"""The one place run status changes are announced to integrations (webhooks).

Called inside the transaction that changes the status, so the announcement (a webhook delivery
row, an outbox) commits or rolls back with the change itself: nothing is announced that did not
happen, and nothing that happened goes unannounced. The hooks app is optional.
"""

from __future__ import annotations

from datetime import datetime

from runs.models import Run

# Run status -> webhook event type.
EVENT_TYPES = {
    "queued": "run.queued",
    "running": "run.started",
    "waiting": "run.waiting_for_approval",
    "succeeded": "run.succeeded",
    "failed": "run.failed",
    "cancelled": "run.cancelled",
    "timed_out": "run.timed_out",
}


def run_status_announce(*, run: Run, status: str, now: datetime) -> None:
    """Record the announcements for a run that just moved to `status` (in its transaction)."""
    event_type = EVENT_TYPES.get(status)
    if event_type is None:
        return
    from django.apps import apps

    if not apps.is_installed("hooks"):
        return
    from hooks.services import webhook_deliveries_create

    webhook_deliveries_create(run=run, event_type=event_type, now=now)
