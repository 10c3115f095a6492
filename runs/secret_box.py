"""Encryption of secret parameter values at rest (Fernet, keyed from SECRET_KEY).

Secrets are stored only in `Run.secret_params`, encrypted; pages, API, events and audit rows see
the masked `Run.params`. Rotating SECRET_KEY makes secrets of runs not yet started unreadable:
such executions fail with a message saying so.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

MASK = "********"


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"switchyard.secret-params:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def secrets_encrypt(values: dict[str, Any]) -> str:
    """Encrypt a mapping of secret parameter values ('' when there are none)."""
    if not values:
        return ""
    return _fernet().encrypt(json.dumps(values).encode()).decode()


def secrets_decrypt(token: str) -> dict[str, Any]:
    """Decrypt what secrets_encrypt produced. Raises ValueError if the key has changed."""
    if not token:
        return {}
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken:
        raise ValueError(
            "secret parameters cannot be decrypted: SECRET_KEY changed since launch"
        ) from None


def mask_secrets(text: str, secret_values: list[str]) -> str:
    """Replace every occurrence of a secret value in text by the mask."""
    for value in secret_values:
        if value:
            text = text.replace(value, MASK)
    return text


def mask_secrets_deep(value: Any, secret_values: list[str]) -> Any:
    """mask_secrets applied to every string inside a JSON-like value (keys included)."""
    if not secret_values:
        return value
    if isinstance(value, str):
        return mask_secrets(value, secret_values)
    if isinstance(value, list):
        return [mask_secrets_deep(v, secret_values) for v in value]
    if isinstance(value, dict):
        return {mask_secrets_deep(k, secret_values): mask_secrets_deep(v, secret_values)
                for k, v in value.items()}
    return value
