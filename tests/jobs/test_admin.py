"""The worker registry in the admin: listed for staff, read-only."""

from __future__ import annotations

from django.utils import timezone

from jobs.models import WorkerProcess


def test_workers_are_listed_read_only(admin_client, db):
    now = timezone.now()
    WorkerProcess.objects.create(name="vm:42", host="vm", pid=42, started_at=now,
                                 last_seen_at=now)
    page = admin_client.get("/admin/jobs/workerprocess/")
    assert page.status_code == 200
    assert b"vm:42" in page.content
    assert admin_client.get("/admin/jobs/workerprocess/add/").status_code == 403
