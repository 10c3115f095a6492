"""The admin: mark a baseline (one per task), delete runs through the service (files go too,
a baseline or a live run is refused), and read-only artifact pages."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from artifacts.models import Artifact
from artifacts.storage import artifact_storage
from runs.models import AuditLog, Run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_mark_a_baseline_from_the_run_list(staff_client, files_task, launch_files):
    task = files_task(["*.png"])
    first, second = (launch_files(task, "a.png@4x4:") for _ in range(2))
    response = staff_client.post("/admin/runs/run/", {
        "action": "mark_baseline", "_selected_action": [first.pk, second.pk]}, follow=True)
    assert "Select at most one run per task" in response.content.decode()
    task.refresh_from_db()
    assert task.baseline_run_id is None
    staff_client.post("/admin/runs/run/", {"action": "mark_baseline",
                                           "_selected_action": [second.pk]})
    task.refresh_from_db()
    assert task.baseline_run_id == second.pk
    audit = AuditLog.objects.get(action="task.baseline", via="admin")
    assert (audit.actor.username, audit.actor_label) == ("root", "root")
    assert audit.changes == {"baseline_run": [None, second.pk]}


def test_admin_delete_goes_through_the_service(staff_client, files_task, launch_files):
    from artifacts.services import baseline_set
    from tests.artifacts.conftest import ACTOR

    task = files_task(["*.txt"])
    keep, drop = launch_files(task, "a.txt=1"), launch_files(task, "b.txt=2")
    baseline_set(keep, actor=ACTOR)
    key = Artifact.objects.get(run=drop).storage_key
    response = staff_client.post("/admin/runs/run/", {
        "action": "delete_runs", "_selected_action": [keep.pk, drop.pk]},
        follow=True)
    html = response.content.decode()
    assert f"Run #{keep.pk} not deleted: Run {keep.pk} is the baseline of its task" in html
    assert set(Run.objects.values_list("pk", flat=True)) == {keep.pk}
    assert not artifact_storage().exists(key)
    audit = AuditLog.objects.get(action="run.delete", object_id=str(drop.pk))
    assert (audit.via, audit.actor.username) == ("admin", "root")
    # No delete button on the baseline's own page.
    assert staff_client.get(f"/admin/runs/run/{keep.pk}/delete/").status_code == 403


def test_artifact_pages_are_read_only(staff_client, files_task, launch_files):
    run = launch_files(files_task(["*.txt"]), "a.txt=1")
    artifact = Artifact.objects.get(run=run)
    assert staff_client.get("/admin/artifacts/artifact/").status_code == 200
    page = staff_client.get(f"/admin/artifacts/artifact/{artifact.pk}/change/")
    assert page.status_code == 200 and "open in the viewer" in page.content.decode()
    assert staff_client.get("/admin/artifacts/artifact/add/").status_code == 403
