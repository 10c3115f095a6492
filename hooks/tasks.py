"""Delivery work: the q2 task that sends one delivery, and the sweep that hands out the ones
whose next try is due.

q2 delivers at least once, so `delivery_send` takes an id, claims the try by compare-and-set
and returns early when there is nothing to do (already succeeded or failed, not due yet, or
another worker holds it). A result is written only by the try that still owns the delivery.

Timeline of a delivery: the first try is queued in the transaction that recorded the event;
after a failure the delivery waits `BACKOFF_SECONDS` (5 s, 30 s, 2 min, 10 min, 30 min, 2 h),
and `deliveries_due_send`, called on every reaper tick, queues it again once due.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from hooks.models import DELIVERY_OPEN, WebhookDelivery
from hooks.sender import delivery_post
from hooks.services import (
    REQUEUE_SECONDS,
    SendResult,
    deliveries_lost_fail,
    delivery_attempt_record,
    delivery_claim,
    delivery_enqueue,
    endpoint_signing_secrets,
)
from hooks.signing import SecretUnreadable, signature_headers
from hooks.targets import TargetRefused, target_resolve

logger = logging.getLogger(__name__)

SWEEP_LIMIT = 500


def delivery_send(delivery_id: int) -> str:
    """Try to deliver once: claim, sign, POST, record. Idempotent per queue message."""
    attempt = delivery_claim(delivery_id=delivery_id, now=timezone.now())
    if attempt is None:
        return f"webhook delivery {delivery_id}: not due, already ended or being sent; nothing to do"
    try:
        result = _attempt(delivery_id)
    except Exception as exc:  # a bug here must still end the try visibly, and be retried
        logger.exception("webhook delivery %s try %s crashed", delivery_id, attempt)
        result = SendResult(ok=False, error=f"Switchyard internal error: {type(exc).__name__}")
    status = delivery_attempt_record(delivery_id=delivery_id, attempt=attempt,
                                     now=timezone.now(), result=result)
    # Ids and status codes only: the URL may carry a token in its query, and the secret never
    # leaves hooks.signing.
    logger.info("webhook delivery %s try %s: %s (HTTP %s)", delivery_id, attempt, status,
                result.status_code)
    return f"webhook delivery {delivery_id} try {attempt}: {status}"


def _attempt(delivery_id: int) -> SendResult:
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.active:
        return SendResult(ok=False, retryable=False,
                          error="The webhook was disabled before this delivery was sent; "
                                "enable it and redeliver.")
    now = timezone.now()
    try:
        secrets = endpoint_signing_secrets(endpoint, now=now)
    except SecretUnreadable as exc:
        return SendResult(ok=False, retryable=False, error=str(exc))
    try:
        # Resolved and checked at every send: DNS may point elsewhere than at creation.
        target = target_resolve(endpoint.url)
    except TargetRefused as exc:
        return SendResult(ok=False, error=f"Not sent: {exc.message}")
    body = json.dumps(delivery.payload, separators=(",", ":"))
    headers = signature_headers(msg_id=delivery.event_id, body=body, secrets=secrets, now=now)
    return delivery_post(target=target, body=body.encode(), headers=headers,
                         timeout=settings.SWITCHYARD_WEBHOOKS_TIMEOUT)


def deliveries_due_send(*, now: datetime | None = None) -> int:
    """Queue a send for every open delivery whose next try is due; returns how many.

    Called on every reaper tick. Cheap (no HTTP here): the sends run as q2 tasks. A delivery is
    not queued twice for the same try: `queued_at` records the hand-out, and only a message
    that nobody picked up within REQUEUE_SECONDS is presumed lost and replaced. Safe to run
    concurrently: each hand-out is a compare-and-set on the row.
    """
    now = now or timezone.now()
    deliveries_lost_fail(now=now)
    not_queued_for_this_try = (
        Q(queued_at__isnull=True)
        | Q(queued_at__lte=now - timedelta(seconds=REQUEUE_SECONDS))
        | Q(queued_at__lt=F("next_attempt_at"))
    )
    due = WebhookDelivery.objects.filter(status__in=DELIVERY_OPEN, next_attempt_at__lte=now)
    queued = 0
    for delivery_id in due.filter(not_queued_for_this_try).order_by(
            "next_attempt_at").values_list("pk", flat=True)[:SWEEP_LIMIT]:
        with transaction.atomic():
            won = due.filter(not_queued_for_this_try, pk=delivery_id).update(queued_at=now)
            if won:
                delivery_enqueue(delivery_id=delivery_id)
                queued += 1
    return queued

