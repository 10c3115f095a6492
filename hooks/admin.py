"""Back office for webhooks. Endpoints: list, filters, enable/disable and delete, each through
`hooks.services` so it is validated and audited as the staff user; the secret is never shown
(endpoints are created through the API, which shows it once). Deliveries: read-only, with a
"Redeliver" action that goes through the same service as the API. The delivery list is built
for a big table (runs.admin_lists)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from hooks.models import WebhookDelivery, WebhookEndpoint
from hooks.services import (
    webhook_delivery_redeliver,
    webhook_endpoint_delete,
    webhook_endpoint_update,
)
from runs.admin import ReadOnlyAdmin, admin_actor, apply_to_each, run_link
from runs.admin_lists import BigListAdmin, recent_values_filter
from runs.transitions import Actor


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["id", "url", "project", "active", "event_types", "created_by", "created_at",
                    "rotated_at"]
    list_filter = ["active", "project"]
    search_fields = ["url", "description", "project__slug"]
    list_select_related = ["project", "created_by"]
    date_hierarchy = "created_at"
    # Only the description and the active flag are edited here (validated and audited by the
    # service); the URL and events change through the API, which checks the target address.
    fields = ["project", "url", "description", "event_types", "active", "created_by",
              "created_at", "updated_at", "rotated_at", "deliveries_link"]
    readonly_fields = ["project", "url", "event_types", "created_by", "created_at",
                       "updated_at", "rotated_at", "deliveries_link"]
    actions = ["activate_endpoints", "deactivate_endpoints"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Deliveries")
    def deliveries_link(self, obj: WebhookEndpoint) -> str:
        url = reverse("admin:hooks_webhookdelivery_changelist")
        return format_html('<a href="{}?endpoint__id__exact={}">all</a> · '
                           '<a href="{}?endpoint__id__exact={}&amp;status__exact=failed">failed</a>',
                           url, obj.pk, url, obj.pk)

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form, change: bool) -> None:
        changes = {field: form.cleaned_data[field] for field in ("description", "active")
                   if field in form.changed_data}
        if changes:
            stored = WebhookEndpoint.objects.get(pk=obj.pk)
            webhook_endpoint_update(endpoint=stored, changes=changes, actor=admin_actor(request))

    def get_deleted_objects(self, objs, request: HttpRequest) -> tuple:
        # The delivery log goes with its endpoint, as a count: Django would list every delivery
        # (thousands for a busy endpoint) and refuse, deliveries being read-only on their own.
        endpoints = list(objs)
        counts = dict(WebhookDelivery.objects.filter(endpoint__in=endpoints).order_by()
                      .values_list("endpoint_id").annotate(n=Count("id")))
        deleted = []
        for endpoint in endpoints:
            n = counts.get(endpoint.pk, 0)
            deleted += [format_html('Webhook endpoint: <a href="{}">{}</a>', reverse(
                "admin:hooks_webhookendpoint_change", args=[endpoint.pk]), endpoint),
                [f"{n} deliver{'y' if n == 1 else 'ies'} (its delivery log)"]]
        totals = {"webhook endpoints": len(endpoints)}
        if counts:
            totals["webhook deliveries"] = sum(counts.values())
        return deleted, totals, set(), []

    def delete_model(self, request: HttpRequest, obj: WebhookEndpoint) -> None:
        webhook_endpoint_delete(endpoint=obj, actor=admin_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        actor = admin_actor(request)
        for endpoint in queryset:
            webhook_endpoint_delete(endpoint=endpoint, actor=actor)

    def _set_active(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint],
                    active: bool) -> None:
        targets = [(pk, f"Webhook #{pk}") for pk in queryset.order_by("pk").values_list(
            "pk", flat=True)]

        def move(pk: int, actor: Actor) -> str:
            endpoint = WebhookEndpoint.objects.get(pk=pk)
            webhook_endpoint_update(endpoint=endpoint, changes={"active": active}, actor=actor)
            return "done"

        apply_to_each(self, request, targets, move, verb="Enabled" if active else "Disabled",
                      noun="webhook", refused_text="not changed")

    @admin.action(description="Enable selected webhooks", permissions=["change"])
    def activate_endpoints(self, request: HttpRequest,
                           queryset: QuerySet[WebhookEndpoint]) -> None:
        self._set_active(request, queryset, True)

    @admin.action(description="Disable selected webhooks", permissions=["change"])
    def deactivate_endpoints(self, request: HttpRequest,
                             queryset: QuerySet[WebhookEndpoint]) -> None:
        self._set_active(request, queryset, False)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin, BigListAdmin):
    # No date hierarchy: created_at has no index on this table; status and endpoint have.
    list_display = ["id", "endpoint", "event_type", "run_shown", "status", "attempts",
                    "last_status_code", "last_duration_ms", "next_attempt_at", "created_at",
                    "delivered_at"]
    list_filter = ["status", recent_values_filter("event_type", "event type"),
                   "endpoint__project"]
    search_fields = ["=id", "=event_id", "=run__id", "endpoint__url"]
    list_select_related = ["endpoint"]
    list_defer = ("payload", "response_excerpt", "last_error")
    sortable_by = ["id"]
    exclude = ["queued_at"]
    actions = ["redeliver"]

    @admin.display(description="Run", ordering="run_id")
    def run_shown(self, obj: WebhookDelivery) -> str:
        return run_link(obj.run_id) if obj.run_id else "-"

    @admin.action(description="Redeliver selected deliveries", permissions=["redeliver"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        targets = [(pk, f"Delivery #{pk}") for pk in queryset.order_by("pk").values_list(
            "pk", flat=True)]
        created: list[int] = []

        def move(pk: int, actor: Actor) -> str:
            delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=pk)
            created.append(webhook_delivery_redeliver(delivery=delivery, actor=actor).pk)
            return "done"

        apply_to_each(self, request, targets, move, verb="Redelivered", noun="event",
                      refused_text="not redelivered")
        if created:
            self.message_user(request, "New deliveries: " + ", ".join(f"#{pk}" for pk in
                                                                      created[:30]) + ".",
                              messages.SUCCESS)

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        # Resending sends data to someone else's server: the model's change permission, which
        # this read-only admin does not otherwise use (superusers have it).
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")
