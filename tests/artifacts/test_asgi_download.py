"""A download served by the real ASGI server (uvicorn, as in the Procfile) streams the file in
blocks: the bytes arrive whole, and Django never falls back to reading the file into memory
(it warns when it has to)."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from artifacts.models import Artifact
from tests.runs.test_streams import uvicorn_server

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_large_artifact_streams_under_uvicorn(files_task, launch_files, api_for, tmp_path):
    size = 8 * 1024 * 1024
    run = launch_files(files_task(["*.bin"]), f"big.bin~{size}")
    artifact = Artifact.objects.get(run=run)
    headers = api_for("carol").headers
    with uvicorn_server(tmp_path / "asgi", ARTIFACTS_ROOT=str(tmp_path / "artifacts"),
                        STORAGES=_storages(tmp_path)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client, \
            client.stream("GET", f"/api/artifacts/{artifact.pk}/download",
                          headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        digest = hashlib.sha256()
        chunks = 0
        for block in response.iter_raw():
            digest.update(block)
            chunks += 1
        log = server.log.read_text()
    assert digest.hexdigest() == artifact.sha256
    assert chunks > 1
    assert "must consume synchronous iterators" not in log


def _storages(tmp_path) -> dict:
    from django.conf import settings

    return {**settings.STORAGES, "artifacts": {
        **settings.STORAGES["artifacts"],
        "OPTIONS": {**settings.STORAGES["artifacts"]["OPTIONS"],
                    "location": str(tmp_path / "artifacts")}}}
