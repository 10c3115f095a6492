"""API schemas of the webhooks app. Inputs refuse unknown fields (422 naming them), so a typo
such as "event" for "events" is never silently ignored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, Schema
from pydantic import ConfigDict, StrictBool

from hooks.services import DESCRIPTION_MAX, EVENT_TYPES, MAX_ATTEMPTS
from hooks.targets import MAX_URL_LENGTH
from runs.schemas import StorableText

EVENTS_HELP = ("Event types to receive, from: " + ", ".join(EVENT_TYPES)
               + ". An empty list (the default) means all of them.")


class WebhookIn(Schema):
    model_config = ConfigDict(extra="forbid")

    url: StorableText = Field(max_length=MAX_URL_LENGTH,
                              description="Where deliveries are POSTed; http(s), on a public "
                              "address.")
    events: list[StorableText] = Field(default_factory=list, max_length=50,
                                       description=EVENTS_HELP)
    description: StorableText = Field("", max_length=DESCRIPTION_MAX)


class WebhookPatchIn(Schema):
    """Fields left out (or null) are not changed."""

    model_config = ConfigDict(extra="forbid")

    url: StorableText | None = Field(None, max_length=MAX_URL_LENGTH)
    events: list[StorableText] | None = Field(None, max_length=50, description=EVENTS_HELP)
    description: StorableText | None = Field(None, max_length=DESCRIPTION_MAX)
    active: StrictBool | None = Field(None, description="false stops deliveries (not yet sent ones "
                                "fail); true resumes for new events.")


class WebhookOut(Schema):
    id: int
    project: str
    url: str
    description: str
    events: list[str] = Field(description="Subscribed event types; empty means all.")
    active: bool
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None = None
    previous_secret_expires_at: datetime | None = Field(
        None, description="Until then deliveries also carry a signature made with the secret "
        "replaced by the last rotation.")


class WebhookSecretOut(WebhookOut):
    secret: str = Field(description="The signing secret (whsec_...). Shown once: store it now. "
                        "Rotate to get a new one.")


class WebhookPage(Schema):
    items: list[WebhookOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next (older) "
                                    "page; null on the last page.")


class DeliveryOut(Schema):
    id: int
    webhook_id: int
    event_type: str
    event_id: str = Field(description="The message id (webhook-id header); the same for every "
                          "endpoint and for redeliveries of this event.")
    run_id: int | None
    status: str = Field(description="pending, retrying, succeeded or failed.")
    attempts: int = Field(description="Tries made so far.")
    max_attempts: int = MAX_ATTEMPTS
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_duration_ms: int | None
    response_excerpt: str = Field(description="The start of the last response body (2 KB).")
    last_error: str
    payload: dict[str, Any]
    redelivery_of: int | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryPage(Schema):
    items: list[DeliveryOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next (older) "
                                    "page; null on the last page.")
