"""Reads of the webhooks app, with their select_related declared here.

Visibility follows the endpoint's project (`runs.selectors.require_role`): anyone outside it
gets NotFound, never Forbidden, so an endpoint's or a delivery's existence does not leak.
"""

from __future__ import annotations

from hooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from runs.errors import InvalidInput
from runs.models import Project, Role
from runs.selectors import keyset_page, visible_or_404

# Ids beyond a bigint cannot exist; checking here keeps them from reaching the database.
MAX_ID = 2**63 - 1


def endpoint_get(user, webhook_id: int, *, minimum: str = Role.VIEWER) -> WebhookEndpoint:
    endpoint = None
    if 0 < webhook_id <= MAX_ID:
        endpoint = (
            WebhookEndpoint.objects.select_related("project", "created_by")
            .filter(pk=webhook_id).first()
        )
    return visible_or_404(user, endpoint, lambda e: e.project, minimum, f"Webhook {webhook_id}")


def endpoints_list(project: Project, *, cursor: str | None = None, limit: int = 50
                   ) -> tuple[list[WebhookEndpoint], str | None]:
    qs = WebhookEndpoint.objects.filter(project=project).select_related("project", "created_by")
    return keyset_page(qs, cursor=cursor, limit=limit)


def delivery_get(user, delivery_id: int, *, minimum: str = Role.VIEWER) -> WebhookDelivery:
    delivery = None
    if 0 < delivery_id <= MAX_ID:
        delivery = (
            WebhookDelivery.objects.select_related("endpoint", "endpoint__project")
            .filter(pk=delivery_id).first()
        )
    return visible_or_404(user, delivery, lambda d: d.endpoint.project, minimum,
                          f"Delivery {delivery_id}")


def deliveries_list(endpoint: WebhookEndpoint, *, status: str | None = None,
                    cursor: str | None = None, limit: int = 50
                    ) -> tuple[list[WebhookDelivery], str | None]:
    """An endpoint's delivery log, newest first, optionally only one status."""
    if status and status not in DeliveryStatus.values:
        raise InvalidInput("The status filter is invalid.",
                           fields={"status": [f"must be one of: {', '.join(DeliveryStatus.values)}"]})
    qs = WebhookDelivery.objects.filter(endpoint=endpoint)
    if status:
        qs = qs.filter(status=status)
    return keyset_page(qs, cursor=cursor, limit=limit)
