"""Schedules with frozen time: slots fire once, on time; a missed stretch is skipped and
noted, not replayed; two worker processes firing the same slot launch one run; bad input is
refused per field."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine

from runs.errors import InvalidInput
from runs.models import Run, Schedule
from runs.schedules import schedule_create, schedule_update, schedules_fire
from runs.transitions import Actor
from tests.conftest import is_postgres, subprocess_env
from tests.factories import TaskFactory

ALICE = Actor(via="api", label="alice")
T0 = datetime(2026, 6, 1, 10, 2, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def every_five(project, hello_task, personas):
    with time_machine.travel(T0, tick=False):
        return schedule_create(task=hello_task, data={"name": "every five", "cron": "*/5 * * * *",
                                                      "params": {"name": "cron"}},
                               actor=Actor(user=personas["alice"], via="api", label="alice"))


@pytest.mark.django_db
def test_the_next_slot_is_computed_and_fires_once(every_five, hello_task):
    assert every_five.next_run_at == datetime(2026, 6, 1, 10, 5, tzinfo=UTC)
    assert schedules_fire(now=datetime(2026, 6, 1, 10, 4, 59, tzinfo=UTC)).fired == 0
    report = schedules_fire(now=datetime(2026, 6, 1, 10, 5, 12, tzinfo=UTC))
    assert report.fired == 1
    run = Run.objects.get()
    assert (run.trigger, run.params["name"], run.task_id) == ("schedule", "cron", hello_task.pk)
    assert run.idempotency_key == f"schedule:{every_five.pk}:2026-06-01T10:05Z"
    assert run.created_by.username == "alice"
    every_five.refresh_from_db()
    assert every_five.next_run_at == datetime(2026, 6, 1, 10, 10, tzinfo=UTC)
    assert every_five.last_run_id == run.pk and every_five.skipped_slots == 0
    # The same moment again, and the same slot seen by a stale copy: nothing more.
    assert schedules_fire(now=datetime(2026, 6, 1, 10, 5, 30, tzinfo=UTC)).fired == 0
    Schedule.objects.filter(pk=every_five.pk).update(
        next_run_at=datetime(2026, 6, 1, 10, 5, tzinfo=UTC))
    assert schedules_fire(now=datetime(2026, 6, 1, 10, 5, 40, tzinfo=UTC)).fired == 0
    assert Run.objects.count() == 1


@pytest.mark.django_db
def test_missed_slots_are_skipped_and_noted_not_replayed(every_five, settings):
    settings.SWITCHYARD_SCHEDULE_GRACE_SECONDS = 120
    # Nothing ticked from 10:05 until 11:01: the 11:00 slot is 60 s old, within grace, and
    # the 11 slots from 10:05 to 10:55 are skipped.
    report = schedules_fire(now=datetime(2026, 6, 1, 11, 1, tzinfo=UTC))
    assert (report.fired, report.skipped) == (1, 11)
    run = Run.objects.get()
    assert run.idempotency_key.endswith("2026-06-01T11:00Z")
    every_five.refresh_from_db()
    assert every_five.skipped_slots == 11
    assert "skipped 11 slot(s) from 2026-06-01 10:05 UTC" in every_five.last_note
    assert every_five.next_run_at == datetime(2026, 6, 1, 11, 5, tzinfo=UTC)


@pytest.mark.django_db
def test_a_latest_slot_older_than_the_grace_is_skipped_too(every_five, settings):
    settings.SWITCHYARD_SCHEDULE_GRACE_SECONDS = 60
    report = schedules_fire(now=datetime(2026, 6, 1, 10, 9, tzinfo=UTC))  # 10:05 is 4 min old
    assert (report.fired, report.skipped) == (0, 1)
    assert not Run.objects.exists()
    every_five.refresh_from_db()
    assert every_five.next_run_at == datetime(2026, 6, 1, 10, 10, tzinfo=UTC)


@pytest.mark.django_db
def test_a_refused_launch_is_noted_and_the_schedule_moves_on(every_five, hello_task):
    hello_task.enabled = False
    hello_task.save()
    report = schedules_fire(now=datetime(2026, 6, 1, 10, 5, 5, tzinfo=UTC))
    assert (report.fired, report.refused) == (0, 1)
    every_five.refresh_from_db()
    assert "the 2026-06-01 10:05 UTC slot was not launched: Task 'hello' is disabled" \
        in every_five.last_note
    assert every_five.next_run_at == datetime(2026, 6, 1, 10, 10, tzinfo=UTC)


@pytest.mark.django_db
def test_cron_is_read_in_the_schedules_time_zone(project, hello_task):
    # 03:00 in Berlin is 01:00 UTC in summer and 02:00 UTC in winter.
    with time_machine.travel(datetime(2026, 6, 1, 12, 0, tzinfo=UTC), tick=False):
        summer = schedule_create(task=hello_task, data={
            "name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
            "params": {"name": "n"}}, actor=ALICE)
    assert summer.next_run_at == datetime(2026, 6, 2, 1, 0, tzinfo=UTC)
    with time_machine.travel(datetime(2026, 12, 1, 12, 0, tzinfo=UTC), tick=False):
        winter = schedule_update(schedule=summer, data={"cron": "0 3 * * *",
                                                       "timezone": "Europe/Berlin",
                                                       "enabled": True}, actor=ALICE)
        assert winter.next_run_at == datetime(2026, 6, 2, 1, 0, tzinfo=UTC)  # unchanged
        winter = schedule_update(schedule=winter, data={"cron": "0 3 * * 1-5"}, actor=ALICE)
    assert winter.next_run_at == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_enabling_again_does_not_fire_the_slots_spent_disabled(every_five):
    with time_machine.travel(datetime(2026, 6, 1, 10, 3, tzinfo=UTC), tick=False):
        schedule_update(schedule=every_five, data={"enabled": False}, actor=ALICE)
    assert schedules_fire(now=datetime(2026, 6, 1, 12, 0, tzinfo=UTC)).fired == 0
    with time_machine.travel(datetime(2026, 6, 1, 12, 1, tzinfo=UTC), tick=False):
        schedule_update(schedule=every_five, data={"enabled": True}, actor=ALICE)
    every_five.refresh_from_db()
    assert every_five.next_run_at == datetime(2026, 6, 1, 12, 5, tzinfo=UTC)
    assert schedules_fire(now=datetime(2026, 6, 1, 12, 5, 1, tzinfo=UTC)).fired == 1


@pytest.mark.django_db
@pytest.mark.parametrize(("data", "field", "message"), [
    ({"cron": "* * *"}, "cron", "must have five fields"),
    ({"cron": "61 * * * *"}, "cron", "is not a valid cron expression"),
    ({"timezone": "Mars/Olympus"}, "timezone", "is not an IANA time zone"),
    ({"params": {"name": 5}}, "params.name", ""),
    ({"params": {"nope": "x"}}, "params.nope", ""),
    ({"name": ""}, "name", "must be 1 to 100 characters"),
])
def test_bad_input_is_refused_per_field(hello_task, data, field, message):
    base = {"name": "s", "cron": "0 * * * *", "params": {"name": "x"}}
    with pytest.raises(InvalidInput) as caught:
        schedule_create(task=hello_task, data={**base, **data}, actor=ALICE)
    assert field in caught.value.fields
    assert message in " ".join(caught.value.fields[field])


@pytest.mark.django_db
def test_secret_values_cannot_be_scheduled(project):
    task = TaskFactory(project=project, params_schema=[
        {"name": "token", "type": "secret", "required": True}],
        spec={"argv": ["true"], "env": {"T": "{{ token }}"}})
    with pytest.raises(InvalidInput) as caught:
        schedule_create(task=task, data={"name": "s", "cron": "0 * * * *",
                                         "params": {"token": "hunter2"}}, actor=ALICE)
    assert "cannot hold secret values (token)" in caught.value.fields["params"][0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not is_postgres(), reason="row locks across processes: PostgreSQL")
def test_two_worker_processes_firing_the_same_slot_launch_one_run(project, hello_task):
    with time_machine.travel(T0, tick=False):
        schedule = schedule_create(task=hello_task, data={
            "name": "s", "cron": "*/5 * * * *", "params": {"name": "x"}}, actor=ALICE)
    # Two separate processes, as two machines' reapers would, both at 10:05:01.
    code = ("import django, datetime; django.setup();"
            "from runs.schedules import schedules_fire;"
            "r = schedules_fire(now=datetime.datetime(2026, 6, 1, 10, 5, 1, "
            "tzinfo=datetime.UTC)); print(r.fired)")
    env = subprocess_env(DJANGO_SETTINGS_MODULE="config.settings")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,  # noqa: S603
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    fired = [int(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(fired) == [0, 1]
    assert Run.objects.filter(trigger="schedule").count() == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == datetime(2026, 6, 1, 10, 10, tzinfo=UTC)


@pytest.mark.django_db
def test_the_api_creates_lists_changes_and_deletes(api_for, hello_task):
    from runs.models import AuditLog

    alice = api_for("alice")
    with time_machine.travel(T0, tick=False):
        created = alice.post("/api/projects/demo/tasks/hello/schedules", {
            "name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
            "params": {"name": "n"}})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["next_run_at"].startswith("2026-06-02T01:00:00")
    bad = alice.post("/api/projects/demo/tasks/hello/schedules",
                     {"name": "x", "cron": "every day", "params": {}})
    assert bad.status_code == 422
    assert "cron" in bad.json()["error"]["fields"]
    listed = api_for("carol").get("/api/projects/demo/schedules").json()["items"]
    assert [s["name"] for s in listed] == ["nightly"]
    patched = alice.client.patch(f"/api/schedules/{body['id']}", data='{"enabled": false}',
                                 content_type="application/json", headers=alice.headers)
    assert patched.status_code == 200 and patched.json()["next_run_at"] is None
    assert alice.client.delete(f"/api/schedules/{body['id']}",
                               headers=alice.headers).status_code == 204
    assert list(AuditLog.objects.filter(object_type="schedule").order_by("id")
                .values_list("action", flat=True)) == [
        "schedule.create", "schedule.update", "schedule.delete"]


@pytest.mark.django_db
def test_the_admin_creates_through_the_service_and_names_bad_fields(client, hello_task):
    from django.contrib.auth import get_user_model

    from runs.models import AuditLog

    staff = get_user_model().objects.create_superuser("root", "r@example.com", "pw")
    client.force_login(staff)
    form = {"task": hello_task.pk, "name": "hourly", "cron": "61 * * * *",
            "timezone": "UTC", "params": '{"name": "z"}', "enabled": "on"}
    bad = client.post("/admin/runs/schedule/add/", form)
    assert bad.status_code == 200
    assert "is not a valid cron expression" in bad.content.decode()
    with time_machine.travel(T0, tick=False):
        ok = client.post("/admin/runs/schedule/add/", {**form, "cron": "0 * * * *"})
    assert ok.status_code == 302
    schedule = Schedule.objects.get(name="hourly")
    assert schedule.next_run_at == datetime(2026, 6, 1, 11, 0, tzinfo=UTC)
    assert AuditLog.objects.filter(action="schedule.create", via="admin").exists()
    client.post("/admin/runs/schedule/", {"action": "disable",
                                          "_selected_action": [schedule.pk]})
    schedule.refresh_from_db()
    assert schedule.enabled is False


@pytest.mark.django_db
def test_the_schedules_page_by_role(client_for, hello_task):
    alice, bob, carol = client_for("alice"), client_for("bob"), client_for("carol")
    assert client_for("mallory").get("/p/demo/schedules").status_code == 404
    empty = carol.get("/p/demo/schedules").content.decode()
    assert "No schedules yet" in empty and "Add a schedule" not in empty
    form = {"task": "hello", "name": "hourly", "cron": "0 * * * *", "timezone": "UTC",
            "params": '{"name": "p"}', "enabled": "on"}
    assert bob.post("/p/demo/schedules", form).status_code == 403
    bad = alice.post("/p/demo/schedules", {**form, "cron": "whenever",
                                          "params": '{"name": 1'})
    assert bad.status_code == 422
    html = bad.content.decode()
    assert "must be a JSON object" in html and 'id="s-params-error"' in html
    wrong = alice.post("/p/demo/schedules", {**form, "params": '{"nope": 1}'})
    assert wrong.status_code == 422 and "parameter &#x27;nope&#x27;:" in wrong.content.decode()
    with time_machine.travel(T0, tick=False):
        ok = alice.post("/p/demo/schedules", form)
    assert ok.status_code == 303
    schedule = Schedule.objects.get(name="hourly")
    page = carol.get("/p/demo/schedules").content.decode()
    assert "hourly" in page and "0 * * * *" in page and "Disable" not in page
    assert alice.post(f"/schedules/{schedule.pk}/toggle").status_code == 303
    schedule.refresh_from_db()
    assert not schedule.enabled
    assert bob.post(f"/schedules/{schedule.pk}/delete").status_code == 403
    assert alice.post(f"/schedules/{schedule.pk}/delete").status_code == 303
    assert not Schedule.objects.exists()


@pytest.mark.django_db
def test_a_schedule_stops_launching_for_an_owner_who_left_until_a_maintainer_takes_over(
        every_five, personas, project):
    from runs.models import Membership

    Membership.objects.filter(project=project, user=personas["alice"]).delete()
    report = schedules_fire(now=datetime(2026, 6, 1, 10, 5, 10, tzinfo=UTC))
    assert (report.fired, report.refused) == (0, 1)
    every_five.refresh_from_db()
    assert "its owner 'alice' may no longer launch runs in this project" in every_five.last_note
    maintainer = personas["alice"].__class__.objects.create(username="dora")
    Membership.objects.create(project=project, user=maintainer, role="maintainer")
    with time_machine.travel(datetime(2026, 6, 1, 10, 6, tzinfo=UTC), tick=False):
        schedule_update(schedule=every_five, data={"name": "every five"},
                        actor=Actor(user=maintainer, via="api", label="dora"))
    every_five.refresh_from_db()
    assert every_five.created_by == maintainer
    assert schedules_fire(now=datetime(2026, 6, 1, 10, 10, 5, tzinfo=UTC)).fired == 1
    assert Run.objects.get().created_by == maintainer
