"""A client generated from the OpenAPI document by a standard generator
(openapi-python-client) launches a run and reads its events against a live server."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from runs.services import api_token_create

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def generated_client(tmp_path: Path):
    spec = tmp_path / "openapi.json"
    spec.write_text(Client().get("/api/openapi.json").content.decode())
    from openapi_spec_validator import validate

    validate(json.loads(spec.read_text()))  # a standard validator accepts the document
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    subprocess.run(  # noqa: S603
        [str(Path(sys.executable).parent / "openapi-python-client"), "generate",
         "--path", str(spec), "--meta", "none", "--output-path",
         str(tmp_path / "switchyard_client")],
        check=True, env=env, cwd=tmp_path, capture_output=True,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("switchyard_client")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith("switchyard_client")]:
            del sys.modules[name]


def test_a_generated_client_launches_a_run_and_reads_its_events(generated_client, live_server,
                                                                 personas, hello_task):
    from switchyard_client import AuthenticatedClient
    from switchyard_client.api.runs import runs_events, runs_get, runs_launch
    from switchyard_client.models import LaunchIn, LaunchInParams

    _row, token = api_token_create(user=personas["bob"], name="generated")
    client = AuthenticatedClient(base_url=live_server.url, token=token)
    params = LaunchInParams.from_dict({"name": "generated"})
    run = runs_launch.sync(project="demo", task="hello", client=client,
                           body=LaunchIn(params=params))
    assert run.status == "queued"
    assert run.params.to_dict() == {"name": "generated", "count": 1}
    assert runs_get.sync(run_id=run.id, client=client).task == "hello"
    events = runs_events.sync(run_id=run.id, client=client, after=0)
    assert [e.kind for e in events.items][:2] == ["run.queued", "execution.queued"] or \
        events.items[0].kind == "run.queued"
    # Errors come back typed too.
    bad = runs_launch.sync_detailed(project="demo", task="hello", client=client,
                                    body=LaunchIn(params=LaunchInParams.from_dict({})))
    assert bad.status_code == 422
    assert "name" in bad.parsed.error.fields.to_dict()
