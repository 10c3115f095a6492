"""Property-based fuzzing of every API endpoint with Schemathesis against a live server: no
5xx, and every response matches the OpenAPI document (status codes, content type, body)."""

from __future__ import annotations

import json
import os

import pytest
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings

from runs.services import api_token_create

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

EXAMPLES = int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "25"))


def _operations():
    import django

    django.setup()
    import schemathesis

    spec = json.loads(Client().get("/api/openapi.json").content)
    schema = schemathesis.openapi.from_dict(spec)
    return schema, [result.ok() for result in schema.get_all_operations()]


SCHEMA, OPERATIONS = _operations()


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda o: o.label)
def test_the_api_survives_fuzzing_and_matches_its_schema(operation, live_server, personas,
                                                         hello_task):
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    _row, token = api_token_create(user=personas["bob"], name="fuzz")
    headers = {"Authorization": f"Bearer {token}"}

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:
        case.call_and_validate(
            base_url=live_server.url, headers=headers,
            checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                    response_schema_conformance],
        )

    fuzz()
