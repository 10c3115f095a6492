"""REST endpoints for webhooks: endpoints per project, their delivery log, secret rotation and
redelivery. Each endpoint validates a schema, calls a selector or a service, returns a schema.

Roles: viewers read endpoints (never their secret) and deliveries; operators also redeliver;
maintainers create, change, delete and rotate. Outsiders get 404.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Query, Router, Status

from hooks import selectors
from hooks.models import WebhookDelivery, WebhookEndpoint
from hooks.schemas import (
    DeliveryOut,
    DeliveryPage,
    WebhookIn,
    WebhookOut,
    WebhookPage,
    WebhookPatchIn,
    WebhookSecretOut,
)
from hooks.services import (
    webhook_delivery_redeliver,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_update,
    webhook_secret_rotate,
)
from runs.api import actor_for
from runs.models import Role
from runs.schemas import ErrorOut
from runs.selectors import project_get

router = Router(tags=["webhooks"])

READ = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut}
WRITE = {**READ, 403: ErrorOut, 409: ErrorOut, 422: ErrorOut}


def webhook_out(endpoint: WebhookEndpoint) -> dict:
    """The endpoint as shown: never its secret."""
    return {
        "id": endpoint.pk,
        "project": endpoint.project.slug,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": endpoint.event_types,
        "active": endpoint.active,
        "created_by": endpoint.created_by.get_username() if endpoint.created_by else None,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
        "secret_rotated_at": endpoint.rotated_at,
        "previous_secret_expires_at": endpoint.previous_secret_expires_at,
    }


def delivery_out(delivery: WebhookDelivery) -> dict:
    return {
        "id": delivery.pk,
        "webhook_id": delivery.endpoint_id,
        "event_type": delivery.event_type,
        "event_id": delivery.event_id,
        "run_id": delivery.run_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at,
        "last_attempt_at": delivery.last_attempt_at,
        "last_status_code": delivery.last_status_code,
        "last_duration_ms": delivery.last_duration_ms,
        "response_excerpt": delivery.response_excerpt,
        "last_error": delivery.last_error,
        "payload": delivery.payload,
        "redelivery_of": delivery.redelivery_of_id,
        "created_at": delivery.created_at,
        "delivered_at": delivery.delivered_at,
    }


@router.post("/projects/{project}/webhooks", response={201: WebhookSecretOut, **WRITE},
             operation_id="webhooks_create")
def webhooks_create(request: HttpRequest, project: str, body: WebhookIn):
    """Create a webhook endpoint (maintainers). The response holds the signing `secret` once:
    store it now. The URL must be http(s) on a public address (422 naming `url` otherwise);
    unknown event types are a 422 listing the valid ones."""
    found = project_get(request.user, project, minimum=Role.MAINTAINER)
    endpoint, secret = webhook_endpoint_create(
        project=found, url=body.url, events=body.events, description=body.description,
        actor=actor_for(request),
    )
    endpoint = selectors.endpoint_get(request.user, endpoint.pk)
    return Status(201, {**webhook_out(endpoint), "secret": secret})


@router.get("/projects/{project}/webhooks", response={200: WebhookPage, **READ},
            operation_id="webhooks_list")
def webhooks_list(request: HttpRequest, project: str, cursor: str | None = None,
                  limit: int = Query(50, ge=1, le=200)):
    """The project's webhook endpoints, newest first (without secrets). Keyset pagination:
    follow `next_cursor`."""
    found = project_get(request.user, project)
    rows, next_cursor = selectors.endpoints_list(found, cursor=cursor, limit=limit)
    return {"items": [webhook_out(e) for e in rows], "next_cursor": next_cursor}


@router.get("/webhooks/{int:webhook_id}", response={200: WebhookOut, **READ},
            operation_id="webhooks_get")
def webhooks_get(request: HttpRequest, webhook_id: int):
    """One webhook endpoint (without its secret)."""
    return webhook_out(selectors.endpoint_get(request.user, webhook_id))


@router.patch("/webhooks/{int:webhook_id}", response={200: WebhookOut, **WRITE},
              operation_id="webhooks_update")
def webhooks_update(request: HttpRequest, webhook_id: int, body: WebhookPatchIn):
    """Change a webhook's url, events, description or active flag (maintainers)."""
    endpoint = selectors.endpoint_get(request.user, webhook_id, minimum=Role.MAINTAINER)
    changes = body.dict(exclude_unset=True, exclude_none=True)
    endpoint = webhook_endpoint_update(endpoint=endpoint, changes=changes,
                                       actor=actor_for(request))
    return webhook_out(endpoint)


@router.delete("/webhooks/{int:webhook_id}", response={204: None, **WRITE},
               operation_id="webhooks_delete")
def webhooks_delete(request: HttpRequest, webhook_id: int):
    """Delete a webhook endpoint and its delivery log (maintainers)."""
    endpoint = selectors.endpoint_get(request.user, webhook_id, minimum=Role.MAINTAINER)
    webhook_endpoint_delete(endpoint=endpoint, actor=actor_for(request))
    return Status(204, None)


@router.post("/webhooks/{int:webhook_id}/rotate", response={200: WebhookSecretOut, **WRITE},
             operation_id="webhooks_rotate_secret")
def webhooks_rotate_secret(request: HttpRequest, webhook_id: int):
    """Replace the signing secret (maintainers); the new `secret` is in the response once.
    For 24 hours deliveries carry signatures made with both the new and the old secret."""
    endpoint = selectors.endpoint_get(request.user, webhook_id, minimum=Role.MAINTAINER)
    _rotated, secret = webhook_secret_rotate(endpoint=endpoint, actor=actor_for(request))
    endpoint = selectors.endpoint_get(request.user, webhook_id)
    return {**webhook_out(endpoint), "secret": secret}


@router.get("/webhooks/{int:webhook_id}/deliveries", response={200: DeliveryPage,
                                                               422: ErrorOut, **READ},
            operation_id="webhooks_deliveries_list")
def webhooks_deliveries_list(request: HttpRequest, webhook_id: int, status: str | None = None,
                             cursor: str | None = None, limit: int = Query(50, ge=1, le=200)):
    """The endpoint's delivery log, newest first: status, tries, last status code, duration,
    response excerpt and error. Filter with `status` (pending, retrying, succeeded, failed)."""
    endpoint = selectors.endpoint_get(request.user, webhook_id)
    rows, next_cursor = selectors.deliveries_list(endpoint, status=status, cursor=cursor,
                                                  limit=limit)
    return {"items": [delivery_out(d) for d in rows], "next_cursor": next_cursor}


@router.get("/deliveries/{int:delivery_id}", response={200: DeliveryOut, **READ},
            operation_id="deliveries_get")
def deliveries_get(request: HttpRequest, delivery_id: int):
    """One delivery, with its payload and the outcome of its last try."""
    return delivery_out(selectors.delivery_get(request.user, delivery_id))


@router.post("/deliveries/{int:delivery_id}/redeliver", response={201: DeliveryOut, **WRITE},
             operation_id="deliveries_redeliver")
def deliveries_redeliver(request: HttpRequest, delivery_id: int):
    """Send the delivery's event again (operators): a new delivery with the same message id
    and payload, signed afresh and retried on its own. 409 if the webhook is disabled."""
    delivery = selectors.delivery_get(request.user, delivery_id, minimum=Role.OPERATOR)
    new = webhook_delivery_redeliver(delivery=delivery, actor=actor_for(request))
    return Status(201, delivery_out(new))
