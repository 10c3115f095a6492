"""Deliveries end to end: run status changes become signed POSTs that a receiver using the
reference Standard Webhooks library accepts; retries with backoff, give-up, idempotent and fenced
sends, address checks at send time, and the outbox property (no status change, no delivery)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import transaction
from django_q.models import OrmQ
from standardwebhooks import Webhook, WebhookVerificationError

from hooks.models import DeliveryStatus, WebhookDelivery
from hooks.services import (
    BACKOFF_SECONDS,
    MAX_ATTEMPTS,
    REQUEUE_SECONDS,
    SendResult,
    delivery_attempt_record,
    delivery_claim,
    send_lease_seconds,
    webhook_deliveries_create,
    webhook_delivery_redeliver,
    webhook_endpoint_update,
    webhook_secret_rotate,
)
from hooks.tasks import deliveries_due_send, delivery_send
from jobs.tasks import execution_run
from runs.models import Run, RunStatus
from runs.services import run_launch
from runs.transitions import Actor, execution_queue, run_cancel, run_transition
from tests.factories import TaskFactory
from tests.hooks.conftest import ALICE_API, body_of, queued_deliveries_run, queued_delivery_ids

pytestmark = pytest.mark.django_db

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
BOB = Actor(via="api", label="bob")


def _launch(task, params=None) -> Run:
    run, _ = run_launch(task=task, raw_params=params or {"name": "Ada"}, actor=BOB)
    return run


def test_a_run_driven_to_success_is_announced_queued_started_succeeded(receiver, endpoint_for,
                                                                        hello_task):
    endpoint = endpoint_for(receiver)
    run = _launch(hello_task)
    execution = run.executions.get()
    assert execution_queue(execution_id=execution.pk)
    execution_run(execution.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED

    queued_deliveries_run()

    assert [r.payload["type"] for r in receiver.requests] == [
        "run.queued", "run.started", "run.succeeded"]
    assert all(r.verified for r in receiver.requests), [r.error for r in receiver.requests]
    deliveries = list(WebhookDelivery.objects.order_by("id"))
    assert [d.status for d in deliveries] == [DeliveryStatus.SUCCEEDED] * 3
    assert all(d.endpoint_id == endpoint.pk and d.run_id == run.pk for d in deliveries)
    assert all(d.last_status_code == 204 and d.attempts == 1 for d in deliveries)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [d.event_id for d in
                                                                    deliveries]
    assert len({d.event_id for d in deliveries}) == 3


def test_the_payload_describes_the_run(receiver, endpoint_for, hello_task):
    endpoint_for(receiver)
    run = _launch(hello_task)
    queued_deliveries_run()
    body = body_of(receiver.requests[0])
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "run.queued"
    assert body["data"]["run"] == {
        "id": run.pk, "project": "demo", "task": "hello", "status": "queued",
        "status_reason": "", "trigger": "ui",
        "url": f"https://switchyard.example.com/runs/{run.pk}/",
        "created_at": run.created_at.isoformat().replace("+00:00", "Z"),
        "started_at": None, "finished_at": None,
    }
    assert receiver.requests[0].headers["Content-Type"] == "application/json"


def test_secret_parameters_never_reach_the_payload(receiver, endpoint_for, project):
    task = TaskFactory(project=project, slug="deploy", spec={"argv": ["true"]},
                       params_schema=[{"name": "token", "type": "secret", "required": True}])
    endpoint_for(receiver)
    _launch(task, {"token": "hunter2-very-secret"})
    queued_deliveries_run()
    assert receiver.requests and b"hunter2" not in receiver.requests[0].body
    assert "hunter2" not in str(WebhookDelivery.objects.get().payload)


def test_a_tampered_body_or_signature_is_rejected_by_the_library(receiver, endpoint_for,
                                                                 hello_task):
    endpoint_for(receiver)
    _launch(hello_task)
    queued_deliveries_run()
    [received] = receiver.requests
    verifier = Webhook(receiver.secret)
    assert verifier.verify(received.body, received.headers)["type"] == "run.queued"
    tampered_body = received.body.replace(b'"queued"', b'"succeeded"')
    assert tampered_body != received.body
    with pytest.raises(WebhookVerificationError):
        verifier.verify(tampered_body, received.headers)
    signature = received.headers["webhook-signature"]
    forged = signature[:-5] + ("A" if signature[-5] != "A" else "B") + signature[-4:]
    with pytest.raises(WebhookVerificationError):
        verifier.verify(received.body, {**received.headers, "webhook-signature": forged})
    with pytest.raises(WebhookVerificationError):
        verifier.verify(received.body, {**received.headers, "webhook-id": "msg_other"})
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(received.body, received.headers)


def test_the_receiver_itself_refuses_a_delivery_signed_with_another_secret(receiver,
                                                                          endpoint_for,
                                                                          hello_task):
    endpoint_for(receiver)
    receiver.secret = "whsec_" + "B" * 43 + "="  # the integrator stored the wrong secret
    _launch(hello_task)
    queued_deliveries_run()
    [received] = receiver.requests
    assert not received.verified
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.last_status_code == 400


def test_only_subscribed_event_types_are_delivered(receiver, endpoint_for, hello_task):
    endpoint_for(receiver, events=["run.cancelled"])
    run = _launch(hello_task)
    assert not WebhookDelivery.objects.exists()
    run_cancel(run_id=run.pk, actor=BOB)
    assert list(WebhookDelivery.objects.values_list("event_type", flat=True)) == [
        "run.cancelled"]
    queued_deliveries_run()
    assert body_of(receiver.requests[0])["data"]["run"]["status"] == "cancelled"


def test_disabled_endpoints_get_no_deliveries(receiver, endpoint_for, hello_task):
    endpoint = endpoint_for(receiver)
    webhook_endpoint_update(endpoint=endpoint, changes={"active": False}, actor=ALICE_API)
    _launch(hello_task)
    assert not WebhookDelivery.objects.exists()


def test_one_event_to_two_endpoints_shares_its_message_id(receiver, endpoint_for, hello_task):
    endpoint_for(receiver)
    endpoint_for(receiver)  # the receiver now verifies with the second secret
    _launch(hello_task)
    first, second = WebhookDelivery.objects.order_by("id")
    assert first.event_id == second.event_id
    assert first.endpoint_id != second.endpoint_id


def test_a_project_without_webhooks_costs_one_query(hello_task, django_assert_num_queries):
    run = _launch(hello_task)
    with django_assert_num_queries(1):
        assert webhook_deliveries_create(run=run, event_type="run.started", now=T0) == []


# --- retries ---------------------------------------------------------------------------------


def test_a_500_is_retried_with_backoff_until_it_succeeds(receiver, endpoint_for, hello_task):
    endpoint_for(receiver, events=["run.queued"])
    receiver.statuses = [500, 503]
    with time_machine.travel(T0, tick=False) as clock:
        _launch(hello_task)
        queued_deliveries_run()
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
            DeliveryStatus.RETRYING, 1, 500)
        assert delivery.next_attempt_at == T0 + timedelta(seconds=5)
        assert "did not answer with a 2xx" in delivery.last_error

        assert deliveries_due_send(now=T0 + timedelta(seconds=4)) == 0
        clock.move_to(T0 + timedelta(seconds=5))
        assert deliveries_due_send(now=T0 + timedelta(seconds=5)) == 1
        assert deliveries_due_send(now=T0 + timedelta(seconds=5)) == 0  # already handed out
        queued_deliveries_run()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
            DeliveryStatus.RETRYING, 2, 503)
        assert delivery.next_attempt_at == T0 + timedelta(seconds=5 + 30)

        clock.move_to(T0 + timedelta(seconds=35))
        assert deliveries_due_send(now=T0 + timedelta(seconds=35)) == 1
        queued_deliveries_run()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.SUCCEEDED, 3, 204)
    assert delivery.delivered_at == T0 + timedelta(seconds=35)
    assert delivery.next_attempt_at is None and delivery.last_error == ""
    assert len(receiver.requests) == 3 and all(r.verified for r in receiver.requests)
    # One message, three sends: the same id, each with the time of its own send.
    assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery.event_id}
    assert [int(r.headers["webhook-timestamp"]) for r in receiver.requests] == [
        int(T0.timestamp()), int(T0.timestamp()) + 5, int(T0.timestamp()) + 35]


def test_it_gives_up_after_the_last_try(receiver, endpoint_for, hello_task):
    endpoint_for(receiver, events=["run.queued"])
    receiver.default_status = 500
    now = T0
    with time_machine.travel(T0, tick=False) as clock:
        _launch(hello_task)
        queued_deliveries_run()
        for wait in BACKOFF_SECONDS:
            delivery = WebhookDelivery.objects.get()
            assert delivery.status == DeliveryStatus.RETRYING
            assert delivery.next_attempt_at == now + timedelta(seconds=wait)
            now += timedelta(seconds=wait)
            clock.move_to(now)
            assert deliveries_due_send(now=now) == 1
            queued_deliveries_run()
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, MAX_ATTEMPTS)
        assert delivery.next_attempt_at is None
        assert deliveries_due_send(now=now + timedelta(days=30)) == 0
    assert len(receiver.requests) == MAX_ATTEMPTS == 7


def test_a_redirect_is_not_followed(receiver, endpoint_for, hello_task):
    endpoint_for(receiver)
    receiver.default_status = 302
    receiver.extra_headers = {"Location": "http://169.254.169.254/latest/meta-data"}
    _launch(hello_task)
    queued_deliveries_run()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.last_status_code == 302
    assert "not followed" in delivery.last_error and "169.254.169.254" in delivery.last_error
    assert len(receiver.requests) == 1


def test_the_response_excerpt_is_truncated_and_storable(receiver, endpoint_for, hello_task):
    endpoint_for(receiver)
    receiver.default_status = 500
    receiver.body = b"\x00oops " + b"x" * 100_000
    _launch(hello_task)
    queued_deliveries_run()
    delivery = WebhookDelivery.objects.get()
    assert len(delivery.response_excerpt) <= 2048
    assert delivery.response_excerpt.startswith("\ufffdoops xxx")
    assert delivery.last_duration_ms is not None


def test_a_refused_connection_is_retried(endpoint_for, hello_task, receiver):
    import socket

    endpoint_for(receiver)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from hooks.models import WebhookEndpoint

    WebhookEndpoint.objects.update(url=f"http://127.0.0.1:{port}/hooks")
    _launch(hello_task)
    queued_deliveries_run()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.last_status_code is None
    assert "could not connect" in delivery.last_error


def test_a_slow_receiver_times_out(receiver, endpoint_for, hello_task, settings):
    settings.SWITCHYARD_WEBHOOKS_TIMEOUT = 0.2
    endpoint_for(receiver)
    original = receiver.handle

    def slow(path, headers, body):
        import time

        time.sleep(0.6)  # the receiver's slowness, not the test waiting for something
        return original(path, headers, body)

    receiver.handle = slow
    _launch(hello_task)
    queued_deliveries_run()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.RETRYING
    assert "within 0.2 s" in delivery.last_error


# --- idempotency and fencing -----------------------------------------------------------------


def test_a_duplicate_queue_message_does_not_send_again(receiver, endpoint_for, hello_task):
    endpoint_for(receiver)
    _launch(hello_task)
    [delivery_id] = queued_delivery_ids()
    delivery_send(delivery_id)
    assert "nothing to do" in delivery_send(delivery_id)
    assert len(receiver.requests) == 1
    assert WebhookDelivery.objects.get().attempts == 1


def test_two_claims_of_one_try_only_one_wins(receiver, endpoint_for, hello_task):
    endpoint_for(receiver)
    _launch(hello_task)
    delivery = WebhookDelivery.objects.get()
    now = delivery.next_attempt_at
    assert delivery_claim(delivery_id=delivery.pk, now=now) == 1
    assert delivery_claim(delivery_id=delivery.pk, now=now) is None


def test_a_try_whose_worker_died_is_sent_again_after_its_lease(receiver, endpoint_for,
                                                               hello_task):
    endpoint_for(receiver)
    with time_machine.travel(T0, tick=False) as clock:
        _launch(hello_task)
        OrmQ.objects.all().delete()  # the message was taken by a worker...
        delivery = WebhookDelivery.objects.get()
        assert delivery_claim(delivery_id=delivery.pk, now=T0) == 1  # ...which then died
        lease = timedelta(seconds=send_lease_seconds())
        assert deliveries_due_send(now=T0 + lease - timedelta(seconds=1)) == 0
        clock.move_to(T0 + lease)
        assert deliveries_due_send(now=T0 + lease) == 1
        queued_deliveries_run()
        # The dead worker's late result is fenced out: try 2 owns the delivery now.
        late = SendResult(ok=False, status_code=500, error="late")
        assert delivery_attempt_record(delivery_id=delivery.pk, attempt=1, now=T0 + lease,
                                       result=late) == "stale"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SUCCEEDED, 2)
    assert len(receiver.requests) == 1


def test_a_lost_queue_message_is_handed_out_again(receiver, endpoint_for, hello_task):
    endpoint_for(receiver)
    with time_machine.travel(T0, tick=False):
        _launch(hello_task)
        OrmQ.objects.all().delete()  # lost before any worker took it
        # Presumed waiting in the queue until REQUEUE_SECONDS have passed.
        assert deliveries_due_send(now=T0 + timedelta(seconds=REQUEUE_SECONDS - 1)) == 0
        assert deliveries_due_send(now=T0 + timedelta(seconds=REQUEUE_SECONDS)) == 1
        queued_deliveries_run()
    assert WebhookDelivery.objects.get().status == DeliveryStatus.SUCCEEDED


def test_a_delivery_of_a_disabled_endpoint_fails_without_sending(receiver, endpoint_for,
                                                                 hello_task):
    endpoint = endpoint_for(receiver)
    _launch(hello_task)
    webhook_endpoint_update(endpoint=endpoint, changes={"active": False}, actor=ALICE_API)
    queued_deliveries_run()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert "disabled" in delivery.last_error
    assert receiver.requests == []


# --- addresses checked at send time ----------------------------------------------------------


def test_a_private_target_is_refused_at_send_time_when_not_allowed(receiver, endpoint_for,
                                                                   hello_task, settings):
    endpoint_for(receiver)  # allowed when it was created...
    settings.SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE = False  # ...not any more
    _launch(hello_task)
    queued_deliveries_run()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.RETRYING
    assert "loopback" in delivery.last_error and "Not sent" in delivery.last_error
    assert receiver.requests == []


def test_a_name_that_now_resolves_to_loopback_is_refused(receiver, endpoint_for, hello_task,
                                                        settings):
    from hooks.models import WebhookEndpoint

    endpoint_for(receiver)
    port = receiver.url.split(":")[2].split("/")[0]
    WebhookEndpoint.objects.update(url=f"http://localhost:{port}/hooks")
    settings.SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE = False
    _launch(hello_task)
    queued_deliveries_run()
    assert "loopback" in WebhookDelivery.objects.get().last_error
    assert receiver.requests == []


# --- rotation and redelivery -----------------------------------------------------------------


def test_after_rotation_both_secrets_verify_until_the_grace_period_ends(receiver, endpoint_for,
                                                                        hello_task):
    endpoint = endpoint_for(receiver)
    old_secret = receiver.secret
    with time_machine.travel(T0, tick=False) as clock:
        _endpoint, new_secret = webhook_secret_rotate(endpoint=endpoint, actor=ALICE_API)
        assert new_secret != old_secret and new_secret.startswith("whsec_")
        _launch(hello_task)
        queued_deliveries_run()
        [during] = receiver.requests
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        Webhook(old_secret).verify(during.body, during.headers)
        Webhook(new_secret).verify(during.body, during.headers)

        clock.move_to(T0 + timedelta(hours=24, seconds=1))
        receiver.secret = new_secret
        _launch(hello_task)
        queued_deliveries_run()
        after = receiver.requests[-1]
        assert len(after.headers["webhook-signature"].split(" ")) == 1
        Webhook(new_secret).verify(after.body, after.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(old_secret).verify(after.body, after.headers)


def test_redelivery_sends_the_same_message_again(receiver, endpoint_for, hello_task):
    from runs.models import AuditLog

    endpoint_for(receiver)
    _launch(hello_task)
    queued_deliveries_run()
    original = WebhookDelivery.objects.get()
    new = webhook_delivery_redeliver(delivery=original, actor=BOB)
    assert new.pk != original.pk and new.redelivery_of_id == original.pk
    assert (new.event_id, new.payload, new.status) == (original.event_id, original.payload,
                                                       DeliveryStatus.PENDING)
    assert queued_delivery_ids() == [new.pk]
    queued_deliveries_run()
    new.refresh_from_db()
    assert new.status == DeliveryStatus.SUCCEEDED
    first, second = receiver.requests
    assert second.verified and second.body == first.body
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert AuditLog.objects.filter(action="webhook_delivery.redeliver",
                                   object_id=str(new.pk), actor_label="bob").exists()


# --- the outbox ------------------------------------------------------------------------------


def test_a_rolled_back_status_change_leaves_no_delivery(receiver, endpoint_for, hello_task):
    endpoint_for(receiver)
    run = _launch(hello_task)
    deliveries, messages = WebhookDelivery.objects.count(), OrmQ.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        run_transition(run_id=run.pk, to=RunStatus.CANCELLED, actor=BOB, reason="test")
        assert WebhookDelivery.objects.filter(event_type="run.cancelled").exists()
        raise RuntimeError("the transaction fails after the status change")
    assert not WebhookDelivery.objects.filter(event_type="run.cancelled").exists()
    assert (WebhookDelivery.objects.count(), OrmQ.objects.count()) == (deliveries, messages)
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


def test_a_rolled_back_launch_leaves_no_delivery(receiver, endpoint_for, hello_task):
    endpoint_for(receiver)
    with pytest.raises(RuntimeError), transaction.atomic():
        _launch(hello_task)
        raise RuntimeError("rolled back")
    assert not WebhookDelivery.objects.exists()
    assert queued_delivery_ids() == []


def test_the_delivery_and_its_queue_message_commit_together(receiver, endpoint_for, hello_task):
    endpoint_for(receiver)
    _launch(hello_task)
    assert queued_delivery_ids() == list(WebhookDelivery.objects.values_list("pk", flat=True))


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_of_one_delivery_post_once(receiver, endpoint_for, hello_task):
    """Eight workers handed the same delivery at once (duplicate queue messages): the
    compare-and-set claim lets exactly one of them send, on SQLite and PostgreSQL alike."""
    import threading

    from django.db import connection

    endpoint_for(receiver)
    _launch(hello_task)
    [delivery_id] = queued_delivery_ids()
    start = threading.Barrier(8)
    results: list[str] = []

    def worker() -> None:
        try:
            start.wait()
            results.append(delivery_send(delivery_id))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 8
    assert sum("try 1: succeeded" in r for r in results) == 1
    assert len(receiver.requests) == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SUCCEEDED, 1)
