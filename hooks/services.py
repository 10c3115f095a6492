"""Writes of the webhooks app: endpoints (create, update, delete, rotate the secret), the
outbox (a delivery row per subscribed endpoint, written inside the run's status transaction),
manual redelivery, and the claim and result write of each send.

Functions are keyword-only and named <entity>_<action>. Slow I/O (DNS, HTTP) never happens
inside a transaction here: URL checks resolve before the transaction opens, and sends happen in
`hooks.tasks` between the claim and the result write, each its own short statement.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from hooks.models import (
    DELIVERY_OPEN,
    ROTATION_GRACE,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
)
from hooks.signing import SecretUnreadable, secret_decrypt, secret_encrypt, secret_generate
from hooks.targets import TargetRefused, target_resolve
from runs.errors import Conflict, InvalidInput
from runs.models import Project, Run
from runs.notify import EVENT_TYPES as RUN_EVENT_TYPES
from runs.transitions import Actor, audit_write

logger = logging.getLogger(__name__)

# Every event type an endpoint can subscribe to, in lifecycle order.
EVENT_TYPES: tuple[str, ...] = tuple(dict.fromkeys(RUN_EVENT_TYPES.values()))

# Seconds to wait after failed try n (1-based) before try n + 1; after the last one, the
# delivery fails. 7 tries spread over about 2 h 45 min.
BACKOFF_SECONDS: tuple[int, ...] = (5, 30, 120, 600, 1800, 7200)
MAX_ATTEMPTS = len(BACKOFF_SECONDS) + 1
# A try whose worker died is tried again once its lease is over; past this many claims the
# delivery is failed instead of being retried forever.
MAX_CLAIMS = MAX_ATTEMPTS + 1
# A queue message not picked up within this long is presumed lost and handed out again. With
# the ORM broker messages are rows that commit with the delivery, so a loss is rare (a purged
# queue, another broker); a message merely waiting behind busy workers must not be duplicated
# every few minutes, hence long.
REQUEUE_SECONDS = 900

DESCRIPTION_MAX = 500
EXCERPT_MAX = 2048
ERROR_MAX = 1000


def send_lease_seconds() -> float:
    """How long a claimed try owns its delivery: well past the request timeout, so a live send
    is never taken over, and short enough that a dead worker's try comes back soon."""
    return max(60.0, 3 * settings.SWITCHYARD_WEBHOOKS_TIMEOUT)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _storable(text: str, limit: int) -> str:
    """Text the database can hold (PostgreSQL refuses NUL), cut to `limit` with a marker."""
    text = text.replace("\x00", "\ufffd")
    if len(text) > limit:
        return text[: limit - 15] + " [… truncated]"
    return text


# --- the outbox ------------------------------------------------------------------------------


def run_payload(*, run: Run, event_type: str, now: datetime, project_slug: str) -> dict:
    """The JSON body of a run event. Never holds secrets: run.params is already masked."""
    base = settings.SWITCHYARD_BASE_URL.rstrip("/")
    return {
        "type": event_type,
        "timestamp": _iso(now),
        "data": {
            "run": {
                "id": run.pk,
                "project": project_slug,
                "task": run.task_snapshot.get("slug", ""),
                "status": str(run.status),
                "status_reason": run.status_reason,
                "trigger": str(run.trigger),
                "url": base + run.get_absolute_url(),
                "created_at": _iso(run.created_at),
                "started_at": _iso(run.started_at),
                "finished_at": _iso(run.finished_at),
            }
        },
    }


def webhook_deliveries_create(*, run: Run, event_type: str, now: datetime
                              ) -> list[WebhookDelivery]:
    """Record the event for every active endpoint of the run's project subscribed to it, and
    hand each delivery to the queue.

    Called by `runs.notify` inside the transaction that changes the run's status (an outbox):
    with the ORM broker the rows and their queue messages commit or roll back with the change.
    Costs one query when the project has no webhooks.
    """
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(project_id=run.project_id, active=True)
        .select_related("project").order_by("id")
        if endpoint.subscribes_to(event_type)
    ]
    if not endpoints:
        return []
    # One message id per event, shared by every endpoint: it identifies the event, not the
    # delivery (Standard Webhooks), so a receiver fed by two endpoints can drop the duplicate.
    event_id = f"msg_{uuid.uuid4().hex}"
    payload = run_payload(run=run, event_type=event_type, now=now,
                          project_slug=endpoints[0].project.slug)
    deliveries = []
    for endpoint in endpoints:
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, event_type=event_type, event_id=event_id, payload=payload,
            run_id=run.pk, status=DeliveryStatus.PENDING, next_attempt_at=now, queued_at=now,
            created_at=now,
        )
        delivery_enqueue(delivery_id=delivery.pk)
        deliveries.append(delivery)
    return deliveries


def delivery_enqueue(*, delivery_id: int) -> None:
    """Hand a delivery to the q2 queue. With the ORM broker the message is a row written in the
    caller's transaction; with another broker it is sent after commit (the sweep re-sends
    what a crash between commit and send lost)."""
    from django_q.tasks import async_task

    def send() -> None:
        async_task("hooks.tasks.delivery_send", delivery_id,
                   task_name=f"webhook-delivery-{delivery_id}", group="webhooks")

    if settings.Q_CLUSTER.get("orm"):
        send()
    else:
        transaction.on_commit(send)


# --- endpoints -------------------------------------------------------------------------------


def _url_checked(url: Any) -> str:
    """The URL if it may be a webhook target (resolved and checked now); InvalidInput if not."""
    if not isinstance(url, str):
        raise InvalidInput("The URL must be a string.", fields={"url": ["must be a string"]})
    url = url.strip()
    try:
        target_resolve(url)
    except TargetRefused as exc:
        raise InvalidInput(f"The URL cannot receive webhooks: {exc.message}",
                           fields={"url": [exc.message]}) from None
    return url


def _events_checked(events: Any) -> list[str]:
    """Known event types, duplicates dropped, in the order given; InvalidInput otherwise."""
    valid = ", ".join(EVENT_TYPES)
    if events is None:
        return []
    if not isinstance(events, list | tuple) or not all(isinstance(e, str) for e in events):
        raise InvalidInput("events must be a list of event types.",
                           fields={"events": [f"must be a list of event types from: {valid}"]})
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        shown = ", ".join(repr(e[:64]) for e in unknown[:10])
        raise InvalidInput(
            f"Unknown event type(s) {shown}; valid event types are: {valid} "
            "(an empty list means all of them).",
            fields={"events": [f"unknown event type {e[:64]!r}; valid: {valid}"
                               for e in unknown[:10]]},
        )
    return list(dict.fromkeys(events))


def _description_checked(description: Any) -> str:
    if not isinstance(description, str):
        raise InvalidInput("description must be a string.",
                           fields={"description": ["must be a string"]})
    description = description.strip()
    if len(description) > DESCRIPTION_MAX:
        raise InvalidInput("The description is too long.",
                           fields={"description": [f"at most {DESCRIPTION_MAX} characters"]})
    if "\x00" in description:
        raise InvalidInput("The description contains a NUL character.",
                           fields={"description": ["must not contain NUL characters"]})
    return description


def webhook_endpoint_create(
    *,
    project: Project,
    url: str,
    events: list[str] | None,
    actor: Actor,
    description: str = "",
    now: datetime | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Create an endpoint; return (endpoint, secret). The secret is shown to the caller this
    once: it is stored encrypted and never returned again (rotate to get a new one)."""
    now = now or timezone.now()
    url = _url_checked(url)  # resolves the host: before the transaction, never inside it
    event_types = _events_checked(events)
    description = _description_checked(description)
    secret = secret_generate()
    user = actor.user if getattr(actor.user, "pk", None) else None
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            project=project, url=url, description=description, event_types=event_types,
            active=True, secret_encrypted=secret_encrypt(secret), created_by=user,
            created_at=now, updated_at=now,
        )
        audit_write(actor=actor, action="webhook.create", obj=endpoint, now=now,
                    project_id=project.pk,
                    changes={"url": url, "events": event_types, "description": description})
    return endpoint, secret


def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    changes: dict[str, Any],
    actor: Actor,
    now: datetime | None = None,
) -> WebhookEndpoint:
    """Change an endpoint's url, events, description or active flag (keys absent from
    `changes` are left alone). Deliveries already recorded keep their payload and go to the
    endpoint's URL as it is when they are sent."""
    now = now or timezone.now()
    unknown = set(changes) - {"url", "events", "description", "active"}
    if unknown:
        raise InvalidInput("Unknown fields.", fields={k: ["unknown field"] for k in unknown})
    clean: dict[str, Any] = {}
    if "url" in changes:
        clean["url"] = _url_checked(changes["url"])
    if "events" in changes:
        clean["event_types"] = _events_checked(changes["events"])
    if "description" in changes:
        clean["description"] = _description_checked(changes["description"])
    if "active" in changes:
        if not isinstance(changes["active"], bool):
            raise InvalidInput("active must be true or false.",
                               fields={"active": ["must be true or false"]})
        clean["active"] = changes["active"]
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        diff = {}
        for field, value in clean.items():
            old = getattr(locked, field)
            if old != value:
                diff["events" if field == "event_types" else field] = [old, value]
                setattr(locked, field, value)
        if diff:
            locked.updated_at = now
            locked.save(update_fields=[*clean, "updated_at"])
            audit_write(actor=actor, action="webhook.update", obj=locked, now=now,
                        project_id=locked.project_id, changes=diff)
    for field in (*clean, "updated_at"):
        setattr(endpoint, field, getattr(locked, field))
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: Actor,
                            now: datetime | None = None) -> None:
    """Delete an endpoint and its delivery log. Queue messages still pointing at its deliveries
    find nothing to send and end quietly."""
    now = now or timezone.now()
    with transaction.atomic():
        audit_write(actor=actor, action="webhook.delete", obj=endpoint, now=now,
                    project_id=endpoint.project_id, changes={"url": endpoint.url})
        WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()


def webhook_secret_rotate(*, endpoint: WebhookEndpoint, actor: Actor,
                          now: datetime | None = None) -> tuple[WebhookEndpoint, str]:
    """Give the endpoint a new secret and return (endpoint, new secret), shown this once.

    For ROTATION_GRACE after this, deliveries are signed with the new and the previous secret
    (two signatures in `webhook-signature`), so the receiver can switch without a gap.
    """
    now = now or timezone.now()
    secret = secret_generate()
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.previous_secret_encrypted = locked.secret_encrypted
        locked.secret_encrypted = secret_encrypt(secret)
        locked.rotated_at = now
        locked.updated_at = now
        locked.save(update_fields=["previous_secret_encrypted", "secret_encrypted",
                                   "rotated_at", "updated_at"])
        audit_write(actor=actor, action="webhook.rotate_secret", obj=locked, now=now,
                    project_id=locked.project_id,
                    changes={"previous_secret_valid_until": _iso(now + ROTATION_GRACE)})
    return locked, secret


def endpoint_signing_secrets(endpoint: WebhookEndpoint, *, now: datetime) -> list[str]:
    """The secrets a send is signed with: the current one, plus the previous one during the
    grace period after a rotation. Raises SecretUnreadable if the current one is."""
    secrets = [secret_decrypt(endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if expires is not None and now < expires:
        # Unreadable, the old secret is skipped: the current one still signs.
        with contextlib.suppress(SecretUnreadable):
            secrets.append(secret_decrypt(endpoint.previous_secret_encrypted))
    return secrets


# --- deliveries ------------------------------------------------------------------------------


def webhook_delivery_redeliver(*, delivery: WebhookDelivery, actor: Actor,
                               now: datetime | None = None) -> WebhookDelivery:
    """Send a delivery's event again, as a new delivery with the same message id and payload
    (receivers that already processed it can recognise it), tried and retried on its own."""
    now = now or timezone.now()
    endpoint = delivery.endpoint
    if not endpoint.active:
        raise Conflict(f"Webhook {endpoint.pk} is disabled; enable it (PATCH "
                       '{"active": true}) before redelivering.')
    with transaction.atomic():
        new = WebhookDelivery.objects.create(
            endpoint=endpoint, event_type=delivery.event_type, event_id=delivery.event_id,
            payload=delivery.payload, run_id=delivery.run_id, status=DeliveryStatus.PENDING,
            next_attempt_at=now, queued_at=now, created_at=now, redelivery_of=delivery,
        )
        audit_write(actor=actor, action="webhook_delivery.redeliver", obj=new, now=now,
                    project_id=endpoint.project_id,
                    changes={"redelivery_of": delivery.pk, "event_id": delivery.event_id,
                             "event_type": delivery.event_type})
        delivery_enqueue(delivery_id=new.pk)
    return new


def delivery_claim(*, delivery_id: int, now: datetime) -> int | None:
    """Claim the next try of an open, due delivery (compare-and-set). Returns the try's number,
    or None when there is nothing to do: it succeeded or failed already, it is not due, or
    another worker holds it (its next_attempt_at is pushed past the send's lease)."""
    lease_until = now + timedelta(seconds=send_lease_seconds())
    with transaction.atomic():
        claimed = WebhookDelivery.objects.filter(
            pk=delivery_id, status__in=DELIVERY_OPEN, next_attempt_at__lte=now,
            attempts__lt=MAX_CLAIMS,
        ).update(attempts=F("attempts") + 1, next_attempt_at=lease_until, last_attempt_at=now)
        if not claimed:
            return None
        return WebhookDelivery.objects.filter(pk=delivery_id).values_list(
            "attempts", flat=True).get()


@dataclass
class SendResult:
    """How one try went."""

    ok: bool
    status_code: int | None = None
    duration_ms: int | None = None
    excerpt: str = ""
    error: str = ""
    # False when trying again cannot help (the endpoint was disabled, its secret is unreadable).
    retryable: bool = True


def backoff_for(attempt: int) -> int:
    """Seconds before the try after failed try `attempt` (1-based)."""
    return BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS)) - 1]


def delivery_attempt_record(*, delivery_id: int, attempt: int, now: datetime,
                            result: SendResult) -> str:
    """Write how try `attempt` went, only if it is still the delivery's current try (a worker
    whose lease ran out and was replaced writes nothing). Returns the delivery's new status,
    or "stale"."""
    fields: dict[str, Any] = {
        "last_status_code": result.status_code,
        "last_duration_ms": result.duration_ms,
        "response_excerpt": _storable(result.excerpt, EXCERPT_MAX),
        "last_error": _storable(result.error, ERROR_MAX),
    }
    if result.ok:
        status = DeliveryStatus.SUCCEEDED
        fields.update(delivered_at=now, next_attempt_at=None)
    elif not result.retryable or attempt >= MAX_ATTEMPTS:
        status = DeliveryStatus.FAILED
        fields.update(next_attempt_at=None)
    else:
        status = DeliveryStatus.RETRYING
        fields.update(next_attempt_at=now + timedelta(seconds=backoff_for(attempt)))
    updated = WebhookDelivery.objects.filter(
        pk=delivery_id, attempts=attempt, status__in=DELIVERY_OPEN
    ).update(status=status, **fields)
    if not updated:
        logger.info("webhook delivery %s: try %s was superseded; its result is dropped",
                    delivery_id, attempt)
        return "stale"
    return str(status)


def deliveries_lost_fail(*, now: datetime) -> int:
    """Fail open deliveries whose every claim was lost (workers died mid-send) instead of
    handing them out forever. Returns how many."""
    return WebhookDelivery.objects.filter(
        status__in=DELIVERY_OPEN, next_attempt_at__lte=now, attempts__gte=MAX_CLAIMS
    ).update(status=DeliveryStatus.FAILED, next_attempt_at=None,
             last_error="Gave up: the last tries never reported a result (their workers "
                        "stopped mid-send). Redeliver to try again.")
