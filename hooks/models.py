"""Webhook endpoints (where a project's run events go, and the secret they are signed with) and
deliveries (one event to one endpoint: the outbox row, its attempts and its outcome).

Models hold data only. Deliveries are created by `hooks.services.webhook_deliveries_create`
inside the transaction that changes a run's status, and their status moves only through the
compare-and-set claim and the fenced result write in `hooks.services`.

Delivery statuses:

    pending ──send ok──► succeeded
       │
       └─send failed──► retrying ──send ok──► succeeded
                           │  └─send failed, tries left──► retrying (next_attempt_at = backoff)
                           └─send failed, no try left (or not retryable)──► failed

A delivery being sent keeps its status (pending or retrying); the claim only moves
`next_attempt_at` past the send's lease, so a worker that dies mid-send leaves a row that the
sweep hands out again once the lease is over.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models

# After a rotation, deliveries carry a signature with the previous secret too for this long,
# so receivers can switch secrets without rejecting anything in between.
ROTATION_GRACE = timedelta(hours=24)


class WebhookEndpoint(models.Model):
    """A URL that receives a project's run events, signed with the endpoint's secret."""

    project = models.ForeignKey(
        "runs.Project", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=500, blank=True)
    # Event types this endpoint receives (see hooks.services.EVENT_TYPES); empty means all.
    event_types = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    # The whsec_ secret, Fernet-encrypted (hooks.signing): it must be readable to sign, but a
    # database dump alone does not give it away. Shown only on creation and rotation.
    secret_encrypted = models.TextField(editable=False)
    # The secret replaced by the last rotation; still signed with until rotated_at + grace.
    previous_secret_encrypted = models.TextField(blank=True, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The outbox looks up the active endpoints of a project inside every run transition.
            models.Index(fields=["project", "active"], name="webhook_project_active"),
            models.Index(fields=["project", "-id"], name="webhook_project_id"),
        ]

    def __str__(self) -> str:
        return f"Webhook {self.pk} → {self.url}"

    def subscribes_to(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types

    @property
    def previous_secret_expires_at(self):
        if not self.previous_secret_encrypted or self.rotated_at is None:
            return None
        return self.rotated_at + ROTATION_GRACE


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # not tried yet (or its first try is in flight)
    RETRYING = "retrying", "Retrying"  # a try failed; the next one is due at next_attempt_at
    SUCCEEDED = "succeeded", "Succeeded"  # the endpoint answered 2xx
    FAILED = "failed", "Failed"  # every try failed, or the failure cannot be retried


DELIVERY_OPEN = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


class WebhookDelivery(models.Model):
    """One event sent (or to be sent) to one endpoint.

    `event_id` is the Standard Webhooks message id (the `webhook-id` header): the same for every
    endpoint that receives the event and for a manual redelivery, so receivers can drop
    duplicates. The payload is stored as it is sent; it never holds secrets (run parameters are
    already masked on the run).
    """

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_type = models.CharField(max_length=64)
    event_id = models.CharField(max_length=64, db_index=True)
    payload = models.JSONField()
    run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    # Tries claimed so far; the claim increments it, and a result is written only by the try
    # whose number still matches (fencing a worker whose lease ran out).
    attempts = models.PositiveIntegerField(default=0)
    # When the next try is due (pending, retrying); null once the delivery has ended.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When a queue message was last handed out for this delivery: the sweep does not hand out
    # another while one is presumably still waiting in the queue.
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    last_error = models.TextField(blank=True)
    redelivery_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="redeliveries"
    )
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            # The sweep: open deliveries whose next try is due.
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due"),
            # An endpoint's delivery log, newest first, optionally by status.
            models.Index(fields=["endpoint", "-id"], name="delivery_endpoint_id"),
            models.Index(fields=["endpoint", "status", "-id"], name="delivery_endpoint_status"),
        ]

    def __str__(self) -> str:
        return f"Delivery {self.pk} ({self.event_type}) to webhook {self.endpoint_id}"

    @property
    def is_open(self) -> bool:
        return self.status in DELIVERY_OPEN
