"""The webhooks back office: endpoints listed and toggled through the service (audited as the
staff user), secrets never shown, deliveries read-only with a Redeliver action."""

from __future__ import annotations

import pytest
from django.test import Client

from hooks.models import WebhookDelivery, WebhookEndpoint
from hooks.services import webhook_endpoint_create
from runs.models import AuditLog
from runs.services import run_launch
from runs.transitions import Actor
from tests.factories import UserFactory
from tests.hooks.conftest import queued_delivery_ids

pytestmark = pytest.mark.django_db

@pytest.fixture(autouse=True)
def _local_webhooks(settings):
    settings.SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE = True

ENDPOINTS = "/admin/hooks/webhookendpoint/"
DELIVERIES = "/admin/hooks/webhookdelivery/"


@pytest.fixture
def root() -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def created(project, hello_task) -> tuple[WebhookEndpoint, str]:
    endpoint, secret = webhook_endpoint_create(
        project=project, url="http://127.0.0.1:9/hooks", events=[],
        actor=Actor(via="api", label="alice"))
    run_launch(task=hello_task, raw_params={"name": "x"}, actor=Actor(via="api", label="bob"))
    return endpoint, secret


def _action(client: Client, url: str, action: str, ids: list[int]):
    return client.post(url, {"action": action, "_selected_action": [str(i) for i in ids]},
                       follow=True)


def test_the_endpoint_pages_never_show_the_secret(root, created):
    endpoint, secret = created
    listing = root.get(ENDPOINTS)
    detail = root.get(f"{ENDPOINTS}{endpoint.pk}/change/")
    assert listing.status_code == detail.status_code == 200
    for page in (listing, detail):
        text = page.content.decode()
        assert secret not in text and endpoint.secret_encrypted not in text
    assert root.get(f"{ENDPOINTS}add/").status_code == 403


def test_disabling_from_the_admin_goes_through_the_service(root, created):
    endpoint, _secret = created
    response = _action(root, ENDPOINTS, "deactivate_endpoints", [endpoint.pk])
    assert b"Disabled 1 webhook" in response.content
    endpoint.refresh_from_db()
    assert endpoint.active is False
    audit = AuditLog.objects.get(action="webhook.update")
    assert (audit.actor_label, audit.via, audit.changes) == ("root", "admin",
                                                            {"active": [True, False]})


def test_saving_the_change_form_is_audited(root, created):
    endpoint, _secret = created
    response = root.post(f"{ENDPOINTS}{endpoint.pk}/change/",
                         {"description": "from the admin", "active": "on"})
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.description == "from the admin"
    assert AuditLog.objects.get(action="webhook.update").via == "admin"


def test_deleting_from_the_admin_is_audited(root, created):
    endpoint, _secret = created
    response = root.post(f"{ENDPOINTS}{endpoint.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not WebhookEndpoint.objects.exists()
    assert AuditLog.objects.get(action="webhook.delete").actor_label == "root"


def test_deliveries_are_read_only_with_a_redeliver_action(root, created):
    delivery = WebhookDelivery.objects.get()
    assert root.get(DELIVERIES).status_code == 200
    assert root.get(f"{DELIVERIES}{delivery.pk}/change/").status_code == 200
    assert root.post(f"{DELIVERIES}{delivery.pk}/change/", {}).status_code == 403
    assert root.get(f"{DELIVERIES}add/").status_code == 403
    response = _action(root, DELIVERIES, "redeliver", [delivery.pk])
    assert b"Redelivered 1 event" in response.content
    new = WebhookDelivery.objects.exclude(pk=delivery.pk).get()
    assert new.redelivery_of_id == delivery.pk and new.pk in queued_delivery_ids()
    audit = AuditLog.objects.get(action="webhook_delivery.redeliver")
    assert (audit.actor_label, audit.via) == ("root", "admin")


def test_redelivering_to_a_disabled_endpoint_is_a_warning(root, created):
    endpoint, _secret = created
    WebhookEndpoint.objects.update(active=False)
    delivery = WebhookDelivery.objects.get()
    response = _action(root, DELIVERIES, "redeliver", [delivery.pk])
    assert b"not redelivered" in response.content and b"enable it" in response.content
    assert WebhookDelivery.objects.count() == 1


def test_staff_who_may_only_view_deliveries_cannot_redeliver(created):
    from tests.admin_pages import staff_client

    delivery = WebhookDelivery.objects.get()
    viewer = staff_client("auditor", superuser=False, perms=("hooks.view_webhookdelivery",))
    assert viewer.get(DELIVERIES).status_code == 200
    assert "redeliver" not in viewer.get(DELIVERIES).content.decode()
    viewer.post(DELIVERIES, {"action": "redeliver", "_selected_action": [delivery.pk]})
    assert WebhookDelivery.objects.count() == 1


def test_an_endpoint_page_links_to_its_deliveries(root, created):
    endpoint, _secret = created
    page = root.get(f"{ENDPOINTS}{endpoint.pk}/change/").content.decode()
    assert f"{DELIVERIES}?endpoint__id__exact={endpoint.pk}" in page
    listing = root.get(f"{DELIVERIES}?endpoint__id__exact={endpoint.pk}").content.decode()
    assert "1 webhook delivery" in listing


def test_enabling_from_the_admin_goes_through_the_service(root, created):
    endpoint, _secret = created
    WebhookEndpoint.objects.update(active=False)
    response = _action(root, ENDPOINTS, "activate_endpoints", [endpoint.pk])
    assert b"Enabled 1 webhook" in response.content
    endpoint.refresh_from_db()
    assert endpoint.active is True
    audit = AuditLog.objects.get(action="webhook.update")
    assert (audit.actor_label, audit.via, audit.changes) == ("root", "admin",
                                                            {"active": [False, True]})


def test_deleting_selected_endpoints_goes_through_the_service(root, created, project):
    endpoint, _secret = created
    other, _ = webhook_endpoint_create(project=project, url="http://127.0.0.1:9/other",
                                       events=[], actor=Actor(via="api", label="alice"))
    ids = [str(endpoint.pk), str(other.pk)]
    confirm = root.post(ENDPOINTS, {"action": "delete_selected", "_selected_action": ids})
    assert confirm.status_code == 200 and b"Are you sure" in confirm.content
    response = root.post(ENDPOINTS, {"action": "delete_selected", "_selected_action": ids,
                                     "post": "yes"})
    assert response.status_code == 302
    assert not WebhookEndpoint.objects.exists()
    audits = AuditLog.objects.filter(action="webhook.delete", via="admin")
    assert sorted(audits.values_list("object_id", flat=True)) == sorted(ids)


def test_an_endpoint_delete_page_counts_its_deliveries(root, created):
    endpoint, _secret = created
    page = root.get(f"{ENDPOINTS}{endpoint.pk}/delete/").content.decode()
    assert "1 delivery (its delivery log)" in page and "permission to delete" not in page
    assert f"{DELIVERIES}{WebhookDelivery.objects.get().pk}/" not in page
