"""Regressions found by the independent review of schedules: never-firing and non-plain
cron, the repeated hour when clocks go back, and bodies that must be 4xx, not 500."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from runs.models import Run
from runs.schedules import schedule_create, schedules_fire
from runs.transitions import Actor

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 10, 30, 12, 0, tzinfo=UTC)


def _alice(personas):
    c = Client(raise_request_exception=False)
    c.force_login(personas["alice"])
    return c


FORM = {"task": "hello", "name": "x", "cron": "0 * * * *", "timezone": "UTC",
        "params": '{"name": "p"}', "enabled": "on"}


@pytest.mark.parametrize("override", [
    {"cron": "0 0 31 2 *"},                       # valid syntax, never occurs
    {"cron": ",".join(str(i) for i in range(60)) + " * * * *"},  # 5 fields, > 100 chars
    {"params": "[" * 100000 + "]" * 100000},      # deep JSON
], ids=["feb31", "longcron", "deepjson"])
def test_the_schedules_page_refuses_bad_input_without_a_500(personas, hello_task, override):
    r = _alice(personas).post("/p/demo/schedules", {**FORM, **override})
    print(list(override)[0], r.status_code)
    assert r.status_code in (303, 422)


@pytest.mark.parametrize("body", [
    {"name": "x", "cron": "0 0 31 2 *"},
    {"name": "x", "cron": "0 0 30 2 *", "timezone": "Europe/Berlin"},
], ids=["feb31", "feb30"])
def test_the_api_refuses_schedules_that_never_fire(api_for, hello_task, body):
    api = api_for("alice")
    api.client.raise_request_exception = False
    r = api.post("/api/projects/demo/tasks/hello/schedules", {**body, "params": {"name": "p"}})
    print(r.status_code, r.content[:200])
    assert r.status_code in (201, 422, 400)


def test_a_daily_slot_fires_once_when_clocks_go_back(personas, hello_task):
    with time_machine.travel(T0, tick=False):
        schedule_create(task=hello_task, data={"name": "nightly", "cron": "30 1 * * *",
                                                   "timezone": "America/New_York",
                                                   "params": {"name": "n"}},
                            actor=Actor(user=personas["alice"], via="api", label="alice"))
    fired = []
    for hour in range(0, 48):
        now = datetime(2026, 10, 31, 0, 0, tzinfo=UTC).replace(hour=0)
        now = datetime.fromtimestamp(now.timestamp() + hour * 3600, UTC).replace(minute=31)
        rep = schedules_fire(now=now)
        if rep.fired:
            fired.append(now.isoformat())
    keys = list(Run.objects.order_by("pk").values_list("idempotency_key", flat=True))
    print(keys)
    assert len([k for k in keys if "2026-11-01" in k]) == 1


@pytest.mark.parametrize("cron", ["R R * * *", "0 3 L * *", "0 3 * * 5#2", "0 3 ? * *"])
def test_only_plain_cron_is_accepted(personas, hello_task, cron):
    from runs.errors import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        schedule_create(task=hello_task, data={"name": "r", "cron": cron,
                                               "params": {"name": "n"}},
                        actor=Actor(user=personas["alice"], via="api", label="alice"))
    assert "is not plain cron" in caught.value.fields["cron"][0]


def test_an_hourly_schedule_fires_in_both_repeated_hours(personas, hello_task):
    with time_machine.travel(T0, tick=False):
        schedule_create(task=hello_task, data={"name": "hourly", "cron": "30 * * * *",
                                               "timezone": "America/New_York",
                                               "params": {"name": "n"}},
                        actor=Actor(user=personas["alice"], via="api", label="alice"))
    for minutes in range(0, 48 * 60, 60):
        schedules_fire(now=datetime.fromtimestamp(
            datetime(2026, 10, 31, 0, 31, tzinfo=UTC).timestamp() + minutes * 60, UTC))
    keys = [k for k in Run.objects.values_list("idempotency_key", flat=True)
            if "2026-11-01T05:30Z" in k or "2026-11-01T06:30Z" in k]
    assert len(keys) == 2  # 01:30 EDT and 01:30 EST: an hourly job runs in both hours


@pytest.mark.parametrize("raw", ["[" * 100000 + "]" * 100000, "[1,2]", '"x"', "null",
                                 '{"name": "x", "cron": "0 * * * *", "params": {"name": "\\u0000"}}',
                                 '{"name": "x", "cron": "0 * * * *", "timezone": "Etc/../UTC"}',
                                 '{"name": "x", "cron": "0 * * * *", "timezone": "posixrules"}'])
def test_the_api_refuses_malformed_schedule_bodies(api_for, hello_task, raw):
    api = api_for("alice")
    api.client.raise_request_exception = False
    r = api.post("/api/projects/demo/tasks/hello/schedules", raw=raw)
    print("RAW", raw[:60], r.status_code, r.content[:300])
    assert r.status_code in (201, 422, 400)
