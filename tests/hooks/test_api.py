"""The webhooks API: the permission matrix, the secret shown once, validation (no 5xx for any
input), address refusal at creation, pagination with pinned query counts, audit rows and the
OpenAPI description."""

from __future__ import annotations

import json

import pytest

from hooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from runs.models import AuditLog
from runs.services import api_token_create, run_launch
from runs.transitions import Actor
from tests.factories import UserFactory
from tests.hooks.conftest import queued_delivery_ids

pytestmark = pytest.mark.django_db

CREATE = "/api/projects/demo/webhooks"
PUBLIC_URL = "https://93.184.216.34/hooks"  # a public address literal: no DNS needed


def call(client, method: str, path: str, data=None, raw: str | None = None):
    """Any method through the persona's real-token client."""
    body = raw if raw is not None else (json.dumps(data) if data is not None else "")
    return client.client.generic(method, path, body, content_type="application/json",
                                 headers=client.headers)


def _error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


@pytest.fixture
def endpoint(project, personas) -> WebhookEndpoint:
    from hooks.services import webhook_endpoint_create

    created, _secret = webhook_endpoint_create(
        project=project, url=PUBLIC_URL, events=["run.succeeded"], description="CI",
        actor=Actor(user=personas["alice"], via="api", label="alice"))
    return created


@pytest.fixture
def delivery(endpoint, hello_task) -> WebhookDelivery:
    from hooks.services import webhook_endpoint_update

    webhook_endpoint_update(endpoint=endpoint, changes={"events": []},
                            actor=Actor(via="api", label="alice"))
    run_launch(task=hello_task, raw_params={"name": "x"}, actor=Actor(via="api", label="bob"))
    return WebhookDelivery.objects.get()


# --- the permission matrix -------------------------------------------------------------------

# operation id -> expected status for alice (maintainer), bob (operator), carol (viewer),
# mallory (outsider), and no credentials.
MATRIX = {
    "webhooks_create": (201, 403, 403, 404, 401),
    "webhooks_list": (200, 200, 200, 404, 401),
    "webhooks_get": (200, 200, 200, 404, 401),
    "webhooks_update": (200, 403, 403, 404, 401),
    "webhooks_delete": (204, 403, 403, 404, 401),
    "webhooks_rotate_secret": (200, 403, 403, 404, 401),
    "webhooks_deliveries_list": (200, 200, 200, 404, 401),
    "deliveries_get": (200, 200, 200, 404, 401),
    "deliveries_redeliver": (201, 201, 403, 404, 401),
}
PERSONAS = ["alice", "bob", "carol", "mallory", None]


def _request(operation: str, endpoint: WebhookEndpoint, delivery: WebhookDelivery):
    return {
        "webhooks_create": ("POST", CREATE, {"url": PUBLIC_URL, "events": ["run.failed"]}),
        "webhooks_list": ("GET", CREATE, None),
        "webhooks_get": ("GET", f"/api/webhooks/{endpoint.pk}", None),
        "webhooks_update": ("PATCH", f"/api/webhooks/{endpoint.pk}", {"description": "x"}),
        "webhooks_delete": ("DELETE", f"/api/webhooks/{endpoint.pk}", None),
        "webhooks_rotate_secret": ("POST", f"/api/webhooks/{endpoint.pk}/rotate", None),
        "webhooks_deliveries_list": ("GET", f"/api/webhooks/{endpoint.pk}/deliveries", None),
        "deliveries_get": ("GET", f"/api/deliveries/{delivery.pk}", None),
        "deliveries_redeliver": ("POST", f"/api/deliveries/{delivery.pk}/redeliver", None),
    }[operation]


@pytest.mark.parametrize("operation", sorted(MATRIX))
@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p or "anonymous")
def test_the_permission_matrix(api_for, endpoint, delivery, operation, persona):
    method, path, data = _request(operation, endpoint, delivery)
    response = call(api_for(persona), method, path, data)
    expected = MATRIX[operation][PERSONAS.index(persona)]
    assert response.status_code == expected, response.content
    if expected >= 400:
        assert _error(response)["message"]


def test_the_matrix_covers_every_webhook_operation(client):
    spec = client.get("/api/openapi.json").json()
    operations = {op["operationId"] for path, methods in spec["paths"].items()
                  for op in methods.values()
                  if "webhook" in path or "deliver" in path}
    assert operations == set(MATRIX)


def test_staff_may_do_everything(endpoint, delivery):
    from tests.conftest import ApiClient

    _row, token = api_token_create(user=UserFactory(username="root", is_staff=True), name="t")
    client = ApiClient(token)
    for operation in sorted(MATRIX, key=lambda o: o == "webhooks_delete"):  # delete last
        method, path, data = _request(operation, endpoint, delivery)
        assert call(client, method, path, data).status_code < 300, operation


def test_an_outsider_cannot_tell_an_endpoint_exists(api_for, endpoint):
    missing = call(api_for("mallory"), "GET", "/api/webhooks/999999")
    hidden = call(api_for("mallory"), "GET", f"/api/webhooks/{endpoint.pk}")
    assert missing.status_code == hidden.status_code == 404
    assert _error(hidden)["code"] == _error(missing)["code"] == "not_found"


# --- the secret ------------------------------------------------------------------------------


def test_the_secret_is_shown_once_at_creation(api_for):
    alice = api_for("alice")
    response = alice.post(CREATE, {"url": PUBLIC_URL, "events": ["run.succeeded",
                                                                 "run.failed"]})
    assert response.status_code == 201, response.content
    body = response.json()
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert body["events"] == ["run.succeeded", "run.failed"]
    assert body["url"] == PUBLIC_URL and body["active"] is True
    assert body["created_by"] == "alice"
    for path in (CREATE, f"/api/webhooks/{body['id']}"):
        shown = alice.get(path)
        assert shown.status_code == 200
        assert secret not in shown.content.decode() and b'"secret"' not in shown.content
    patched = call(alice, "PATCH", f"/api/webhooks/{body['id']}", {"description": "new"})
    assert secret not in patched.content.decode() and b'"secret"' not in patched.content
    # Not stored in clear, not in the audit log.
    row = WebhookEndpoint.objects.get(pk=body["id"])
    assert secret not in row.secret_encrypted
    assert secret not in json.dumps(list(AuditLog.objects.values("changes")))


def test_rotation_shows_the_new_secret_once(api_for, endpoint):
    alice = api_for("alice")
    response = alice.post(f"/api/webhooks/{endpoint.pk}/rotate")
    assert response.status_code == 200
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert body["secret_rotated_at"] and body["previous_secret_expires_at"]
    again = alice.post(f"/api/webhooks/{endpoint.pk}/rotate").json()["secret"]
    assert again != body["secret"]
    shown = alice.get(f"/api/webhooks/{endpoint.pk}")
    assert again not in shown.content.decode() and b'"secret"' not in shown.content
    assert AuditLog.objects.filter(action="webhook.rotate_secret", via="api",
                                   actor__username="alice").count() == 2


# --- validation ------------------------------------------------------------------------------


def test_unknown_event_types_are_a_422_listing_the_valid_ones(api_for):
    response = api_for("alice").post(CREATE, {"url": PUBLIC_URL,
                                              "events": ["run.succeeded", "run.exploded"]})
    assert response.status_code == 422
    error = _error(response)
    assert "run.exploded" in error["message"]
    assert "run.waiting_for_approval" in error["fields"]["events"][0]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("url", [
    "ftp://93.184.216.34/x", "not a url", "http://", "javascript:alert(1)",
    "https://user:pw@93.184.216.34/", "https://93.184.216.34:99999/", "https://a b.com/",
    "https://" + "a" * 64 + ".example.com/", "https://93.184.216.34/" + "x" * 3000, 12,
    None, ["https://93.184.216.34/"], "https://93.184.216.34/\x00", "https://\ud800.com/",
])
def test_bad_urls_are_a_422_naming_the_field(api_for, url):
    response = api_for("alice").post(CREATE, {"url": url})
    assert response.status_code == 422, response.content
    assert "url" in _error(response)["fields"]


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:8000/hooks", "loopback"),
    ("http://localhost/hooks", "loopback"),
    ("http://[::1]/hooks", "loopback"),
    ("http://10.0.0.5/hooks", "private"),
    ("http://192.168.1.10/hooks", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://0.0.0.0/", "unspecified"),
])
def test_private_targets_are_refused_at_creation(api_for, settings, url, reason):
    settings.SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE = False
    response = api_for("alice").post(CREATE, {"url": url})
    assert response.status_code == 422
    message = _error(response)["fields"]["url"][0]
    assert reason in message and "SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE" in message
    assert not WebhookEndpoint.objects.exists()


def test_a_private_target_passes_when_allowed(api_for, settings):
    settings.SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE = True
    assert api_for("alice").post(CREATE, {"url": "http://127.0.0.1:9/x"}).status_code == 201


def test_changing_the_url_to_a_private_one_is_refused(api_for, endpoint, settings):
    settings.SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE = False
    response = call(api_for("alice"), "PATCH", f"/api/webhooks/{endpoint.pk}",
                    {"url": "http://10.1.1.1/"})
    assert response.status_code == 422 and "url" in _error(response)["fields"]
    endpoint.refresh_from_db()
    assert endpoint.url == PUBLIC_URL


@pytest.mark.parametrize("body", [
    {"url": PUBLIC_URL, "secret": "whsec_mine"},  # unknown field
    {"url": PUBLIC_URL, "event": ["run.failed"]},  # a typo of events
    {"url": PUBLIC_URL, "events": "run.failed"},
    {"url": PUBLIC_URL, "events": [1, 2]},
    {"url": PUBLIC_URL, "events": ["run.failed"] * 51},
    {"url": PUBLIC_URL, "events": ["x" * 100_000]},
    {"url": PUBLIC_URL, "description": "x" * 501},
    {"url": PUBLIC_URL, "description": "a\x00b"},
    {"url": PUBLIC_URL, "description": 5},
    {},
])
def test_invalid_bodies_are_a_422(api_for, body):
    response = api_for("alice").post(CREATE, body)
    assert response.status_code == 422, response.content
    assert _error(response)["fields"]


@pytest.mark.parametrize("raw", ["{not json", "", "null", "[1, 2]", '"x"', "\x00"])
def test_malformed_json_is_a_4xx(api_for, raw):
    response = api_for("alice").post(CREATE, raw=raw)
    assert 400 <= response.status_code < 500
    assert _error(response)["message"]


@pytest.mark.parametrize("body", [
    {"active": "yes"}, {"url": 5}, {"events": ["nope"]}, {"colour": "red"},
    {"description": "\ud800"},
])
def test_invalid_patches_are_a_422(api_for, endpoint, body):
    response = call(api_for("alice"), "PATCH", f"/api/webhooks/{endpoint.pk}", body)
    assert response.status_code == 422, response.content


def test_a_patch_changes_only_what_it_names_and_is_audited(api_for, endpoint):
    response = call(api_for("alice"), "PATCH", f"/api/webhooks/{endpoint.pk}",
                    {"events": ["run.failed", "run.failed"], "active": False, "url": None})
    assert response.status_code == 200
    body = response.json()
    assert (body["events"], body["active"], body["url"], body["description"]) == (
        ["run.failed"], False, PUBLIC_URL, "CI")
    audit = AuditLog.objects.get(action="webhook.update")
    assert audit.changes == {"events": [["run.succeeded"], ["run.failed"]],
                             "active": [True, False]}
    assert (audit.actor_label, audit.via) == ("alice", "api")


def test_an_empty_patch_changes_nothing(api_for, endpoint):
    response = call(api_for("alice"), "PATCH", f"/api/webhooks/{endpoint.pk}", {})
    assert response.status_code == 200
    assert not AuditLog.objects.filter(action="webhook.update").exists()


@pytest.mark.parametrize("path", [
    "/api/webhooks/99999999999999999999", "/api/webhooks/0",
    "/api/deliveries/99999999999999999999/redeliver", "/api/deliveries/0",
    "/api/webhooks/9223372036854775808/deliveries",
])
def test_huge_or_zero_ids_are_404(api_for, path, endpoint):
    method = "POST" if path.endswith("redeliver") else "GET"
    assert call(api_for("alice"), method, path).status_code == 404


def test_a_bad_cursor_is_400_and_a_bad_status_filter_422(api_for, endpoint):
    carol = api_for("carol")
    assert carol.get(f"{CREATE}?cursor=garbage").status_code == 400
    assert carol.get(f"/api/webhooks/{endpoint.pk}/deliveries?cursor=%21").status_code == 400
    response = carol.get(f"/api/webhooks/{endpoint.pk}/deliveries?status=lost")
    assert response.status_code == 422 and "status" in _error(response)["fields"]


def test_a_nul_in_the_path_or_query_is_400(api_for, endpoint):
    assert api_for("carol").get(f"/api/webhooks/{endpoint.pk}/deliveries?status=%00"
                                ).status_code == 400
    assert api_for("carol").get("/api/projects/de%00mo/webhooks").status_code == 400


# --- lists -----------------------------------------------------------------------------------


def test_endpoints_are_paged_newest_first(api_for, endpoint):
    alice = api_for("alice")
    ids = [endpoint.pk] + [alice.post(CREATE, {"url": PUBLIC_URL}).json()["id"]
                           for _ in range(2)]
    first = alice.get(f"{CREATE}?limit=2").json()
    assert [e["id"] for e in first["items"]] == ids[::-1][:2]
    second = alice.get(f"{CREATE}?limit=2&cursor={first['next_cursor']}").json()
    assert [e["id"] for e in second["items"]] == [ids[0]]
    assert second["next_cursor"] is None


def test_deliveries_are_paged_and_filtered_by_status(api_for, delivery, hello_task):
    run_launch(task=hello_task, raw_params={"name": "y"}, actor=Actor(via="api", label="b"))
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.FAILED)
    carol = api_for("carol")
    path = f"/api/webhooks/{delivery.endpoint_id}/deliveries"
    page = carol.get(f"{path}?limit=1").json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = carol.get(f"{path}?limit=1&cursor={page['next_cursor']}").json()
    assert rest["items"][0]["id"] == delivery.pk
    failed = carol.get(f"{path}?status=failed").json()["items"]
    assert [d["id"] for d in failed] == [delivery.pk]
    item = failed[0]
    assert item["payload"]["type"] == "run.queued"
    assert item["max_attempts"] == 7 and item["event_id"].startswith("msg_")


def _count_queries(callable_) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        callable_()
    return len(captured)


def test_list_endpoints_cost_the_same_queries_for_one_row_or_many(api_for, endpoint, hello_task,
                                                                   personas):
    from hooks.services import webhook_endpoint_create, webhook_endpoint_update

    carol = api_for("carol")
    carol.get(CREATE)  # warm the token's last-used stamp
    webhook_endpoint_update(endpoint=endpoint, changes={"events": []},
                            actor=Actor(via="api", label="alice"))
    run_launch(task=hello_task, raw_params={"name": "x"}, actor=Actor(via="api", label="b"))
    deliveries = f"/api/webhooks/{endpoint.pk}/deliveries"
    one_endpoint = _count_queries(lambda: carol.get(CREATE))
    one_delivery = _count_queries(lambda: carol.get(deliveries))
    for _ in range(4):
        webhook_endpoint_create(project=endpoint.project, url=PUBLIC_URL, events=[],
                                actor=Actor(user=personas["alice"], via="api", label="alice"))
        run_launch(task=hello_task, raw_params={"name": "x"}, actor=Actor(via="api", label="b"))
    assert _count_queries(lambda: carol.get(CREATE)) == one_endpoint <= 5
    assert _count_queries(lambda: carol.get(deliveries)) == one_delivery <= 5


# --- delete, redeliver, audit ----------------------------------------------------------------


def test_delete_removes_the_endpoint_and_its_log_and_is_audited(api_for, delivery):
    endpoint_id = delivery.endpoint_id
    response = call(api_for("alice"), "DELETE", f"/api/webhooks/{endpoint_id}")
    assert response.status_code == 204 and response.content == b""
    assert not WebhookEndpoint.objects.exists() and not WebhookDelivery.objects.exists()
    audit = AuditLog.objects.get(action="webhook.delete")
    assert audit.object_id == str(endpoint_id) and audit.actor_label == "alice"
    # The queued message of the deleted delivery finds nothing to do.
    from hooks.tasks import delivery_send

    assert "nothing to do" in delivery_send(delivery.pk)


def test_redeliver_creates_and_queues_a_new_delivery(api_for, delivery):
    response = api_for("bob").post(f"/api/deliveries/{delivery.pk}/redeliver")
    assert response.status_code == 201
    body = response.json()
    assert body["id"] != delivery.pk and body["redelivery_of"] == delivery.pk
    assert body["event_id"] == delivery.event_id and body["status"] == "pending"
    assert body["id"] in queued_delivery_ids()
    audit = AuditLog.objects.get(action="webhook_delivery.redeliver")
    assert (audit.actor_label, audit.via, audit.object_id) == ("bob", "api", str(body["id"]))


def test_redelivering_to_a_disabled_endpoint_is_409(api_for, delivery):
    call(api_for("alice"), "PATCH", f"/api/webhooks/{delivery.endpoint_id}", {"active": False})
    response = api_for("bob").post(f"/api/deliveries/{delivery.pk}/redeliver")
    assert response.status_code == 409
    assert "enable it" in _error(response)["message"]


def test_create_is_audited_without_the_secret(api_for):
    body = api_for("alice").post(CREATE, {"url": PUBLIC_URL, "description": "CI"}).json()
    audit = AuditLog.objects.get(action="webhook.create")
    assert audit.changes == {"url": PUBLIC_URL, "events": [], "description": "CI"}
    assert (audit.object_id, audit.actor_label, audit.via) == (str(body["id"]), "alice", "api")


# --- OpenAPI ---------------------------------------------------------------------------------


def test_the_openapi_document_validates_and_declares_the_error_codes(client):
    from openapi_spec_validator import validate

    spec = client.get("/api/openapi.json").json()
    validate(spec)
    create = spec["paths"]["/api/projects/{project}/webhooks"]["post"]
    assert create["operationId"] == "webhooks_create"
    assert {"201", "401", "403", "404", "422"} <= set(create["responses"])
    redeliver = spec["paths"]["/api/deliveries/{delivery_id}/redeliver"]["post"]
    assert {"201", "403", "404", "409"} <= set(redeliver["responses"])
