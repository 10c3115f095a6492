"""The same collection, download and clean-up against S3-compatible storage (django-storages'
S3 backend), served by moto's S3 server on 127.0.0.1 since no real S3 can run here."""

from __future__ import annotations

import pytest
from django.utils import timezone

from artifacts.models import Artifact
from artifacts.prune import orphan_keys
from runs.services import run_delete
from tests.artifacts.conftest import ACTOR

pytestmark = pytest.mark.django_db(transaction=True)

BUCKET = "switchyard-test"


@pytest.fixture
def s3(settings):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {"bucket_name": BUCKET, "endpoint_url": endpoint, "region_name": "us-east-1",
               "access_key": "test", "secret_key": "test", "location": "artifacts",
               "default_acl": None, "file_overwrite": False}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {**settings.STORAGES, "artifacts": {
        "BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}}
    yield client
    server.stop()


def _objects(client) -> set[str]:
    listing = client.list_objects_v2(Bucket=BUCKET)
    return {o["Key"] for o in listing.get("Contents", [])}


def test_artifacts_round_trip_through_s3(s3, files_task, launch_files, api_for):
    run = launch_files(files_task(["*.txt", "*.png"]), "report.txt=from-s3 shot.png@4x4:")
    artifacts = {a.name: a for a in Artifact.objects.filter(run=run)}
    assert set(artifacts) == {"report.txt", "shot.png"}
    assert _objects(s3) == {f"artifacts/{a.storage_key}" for a in artifacts.values()}
    assert artifacts["shot.png"].width == 4
    response = api_for("carol").get(f"/api/artifacts/{artifacts['report.txt'].pk}/download")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"from-s3"
    assert orphan_keys(now=timezone.now()) == []
    run_delete(run, actor=ACTOR)
    assert _objects(s3) == set()
