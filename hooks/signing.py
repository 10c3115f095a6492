"""Endpoint secrets and delivery signatures, per the Standard Webhooks spec
(https://www.standardwebhooks.com/).

A secret is "whsec_" + base64 of random bytes. Each delivery carries three headers:

    webhook-id:        the message id (the same on every retry and redelivery)
    webhook-timestamp: unix seconds of this send
    webhook-signature: "v1,<base64 HMAC-SHA256 of f'{id}.{timestamp}.{body}'>", keyed with the
                       base64-decoded part of the secret after "whsec_"; during a rotation's
                       grace period one signature per secret, separated by spaces.

Signing is done by the reference library `standardwebhooks` (the one receivers verify with), so
sender and receivers cannot drift apart. It is imported where it signs, not at module load:
`runs.notify` treats an ImportError of `hooks.services` as "webhooks not installed", and a
missing library must not silently turn webhooks off.

Secrets are stored Fernet-encrypted with a key derived from SECRET_KEY (a different derivation
from run secrets), so a database dump alone does not reveal them.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets as random_source
from datetime import UTC, datetime

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

SECRET_PREFIX = "whsec_"  # noqa: S105  the format's marker, not a secret
# 32 bytes (256 bits): the spec asks for 24 to 64.
SECRET_BYTES = 32


class SecretUnreadable(ValueError):
    """The stored secret cannot be decrypted: SECRET_KEY changed since it was made."""


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(SECRET_BYTES)).decode()


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"switchyard.webhook-secrets:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def secret_encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def secret_decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "the endpoint's secret cannot be decrypted because SECRET_KEY changed since it was "
            "made; rotate the endpoint's secret and give the new one to the receiver"
        ) from None


def signature_headers(*, msg_id: str, body: str, secrets: list[str],
                      now: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for one send of `body`, signed with each secret."""
    from standardwebhooks import Webhook

    # Whole seconds: the timestamp header and the signed string must hold the same value.
    timestamp = datetime.fromtimestamp(math.floor(now.timestamp()), tz=UTC)
    signatures = [Webhook(secret).sign(msg_id=msg_id, timestamp=timestamp, data=body)
                  for secret in secrets]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
