"""Secrets and signatures follow the Standard Webhooks spec: checked against the spec's own test
vector and against the reference library's verifier."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from standardwebhooks import Webhook, WebhookVerificationError

from hooks.signing import (
    SecretUnreadable,
    secret_decrypt,
    secret_encrypt,
    secret_generate,
    signature_headers,
)

NOW = datetime(2030, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)


def test_a_secret_is_whsec_and_base64_of_32_random_bytes():
    secret = secret_generate()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert secret_generate() != secret


def test_the_spec_test_vector_signs_as_published():
    # The example of the Standard Webhooks specification (and the reference libraries' tests).
    headers = signature_headers(
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek", body='{"test": 2432232314}',
        secrets=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        now=datetime.fromtimestamp(1614265330, tz=UTC),
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_the_reference_library_verifies_our_signature():
    secret = secret_generate()
    body = '{"type":"run.queued","data":{"run":{"id":1}}}'
    with time_machine.travel(NOW, tick=False):
        headers = signature_headers(msg_id="msg_1", body=body, secrets=[secret], now=NOW)
        assert headers["webhook-timestamp"] == str(int(NOW.timestamp()))  # whole seconds
        assert Webhook(secret).verify(body.encode(), headers)["type"] == "run.queued"


def test_the_library_rejects_a_stale_timestamp():
    secret = secret_generate()
    headers = signature_headers(msg_id="msg_1", body="{}", secrets=[secret], now=NOW)
    with time_machine.travel(NOW + timedelta(minutes=6), tick=False), \
            pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b"{}", headers)


def test_two_secrets_give_two_signatures_each_verifiable():
    old, new = secret_generate(), secret_generate()
    with time_machine.travel(NOW, tick=False):
        headers = signature_headers(msg_id="msg_1", body="{}", secrets=[new, old], now=NOW)
        assert len(headers["webhook-signature"].split(" ")) == 2
        Webhook(old).verify(b"{}", headers)
        Webhook(new).verify(b"{}", headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret_generate()).verify(b"{}", headers)


def test_secrets_are_stored_encrypted_and_unreadable_under_another_key(settings):
    secret = secret_generate()
    token = secret_encrypt(secret)
    assert secret not in token and secret.removeprefix("whsec_") not in token
    assert secret_decrypt(token) == secret
    settings.SECRET_KEY = "another key"
    with pytest.raises(SecretUnreadable, match="rotate"):
        secret_decrypt(token)
