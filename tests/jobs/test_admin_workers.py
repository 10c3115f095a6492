"""The workers and queue page of the back office (/admin/workers/): live workers and what each
runs, queue depth per status, the oldest waiting executions and why each waits, concurrency
slots with their holders, links to django-q2's admin pages; a poll that pauses in hidden tabs;
staff only, and a fixed number of queries however much is listed."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.dispatch import dispatch
from jobs.models import ReaperTick, WorkerProcess
from runs.models import Execution, Run
from runs.services import run_launch
from runs.transitions import SYSTEM, execution_claim, execution_queue, run_pause
from tests.admin_pages import queries_for, staff_client
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

PAGE = "/admin/workers/"


def worker(name: str, *, seen_ago: float = 0, draining: bool = False, stopped: bool = False
           ) -> WorkerProcess:
    now = timezone.now()
    return WorkerProcess.objects.create(
        name=name, host=name.split(":")[0], pid=int(name.split(":")[1]),
        started_at=now - timedelta(hours=1), last_seen_at=now - timedelta(seconds=seen_ago),
        draining=draining, stopped_at=now if stopped else None)


@pytest.fixture
def site_task(project):
    return TaskFactory(project=project, slug="deploy", spec={"argv": ["true"]},
                       params_schema=[{"name": "site", "type": "string", "required": True}],
                       concurrency_key="site:{{ site }}", concurrency_limit=1)


def launch(task, **params) -> Run:
    return run_launch(task=task, raw_params=params, actor=SYSTEM)[0]


def running_on(run: Run, name: str) -> Execution:
    execution = run.executions.get()
    assert execution_queue(execution_id=execution.pk)
    assert execution_claim(execution_id=execution.pk, worker=name) is not None
    execution.refresh_from_db()
    return execution


@pytest.fixture
def busy(site_task):
    """vm:1 alive running site:a; vm:2 draining, idle; vm:3 silent with a running execution
    (its lease will expire); vm:4 stopped. Waiting: a run for site:a (slot full), a paused
    run, one in retry backoff."""
    worker("vm:1")
    worker("vm:2", draining=True)
    worker("vm:3", seen_ago=600)
    worker("vm:4", stopped=True)
    holder = running_on(launch(site_task, site="a"), "vm:1")
    orphan = running_on(launch(site_task, site="b"), "vm:3")
    waiting = launch(site_task, site="a").executions.get()
    dispatch()  # finds site:a full and says so on the execution
    paused = launch(site_task, site="c")
    run_pause(run_id=paused.pk, actor=SYSTEM)
    backoff = launch(site_task, site="d").executions.get()
    Execution.objects.filter(pk=backoff.pk).update(
        not_before=timezone.now() + timedelta(minutes=5))
    return {"holder": holder, "orphan": orphan, "waiting": waiting,
            "paused": paused.executions.get(), "backoff": backoff}


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_the_page_shows_workers_and_what_each_runs(busy):
    page = staff_client().get(PAGE).content.decode()
    text = text_of(page)
    for name, state in [("vm:1", "alive"), ("vm:2", "draining"), ("vm:3", "silent"),
                        ("vm:4", "stopped")]:
        assert re.search(rf"{re.escape(name)} {state}", text), name
    holder = busy["holder"]
    row = page[page.index("<code>vm:1</code>"):page.index("<code>vm:2</code>")]
    assert f'/admin/runs/execution/{holder.pk}/change/">#{holder.pk} deploy</a>' in row
    assert f"of <a href=\"/admin/runs/run/{holder.run_id}/change/\">run #{holder.run_id}</a>" \
        in row
    # A running execution whose worker went silent is listed apart, to be reaped.
    orphans = page[page.index("Running without a live worker"):]
    assert f"#{busy['orphan'].pk} deploy" in orphans and "<code>vm:3</code>" in orphans


def test_the_page_shows_queue_depth_per_status(busy):
    text = text_of(staff_client().get(PAGE).content.decode())
    # Pending: the slot waiter, the paused run's and the backoff one.
    assert "Pending 3 (1 in retry backoff)" in text
    assert "Queued 0" in text and "Running 2" in text and "Waiting for approval 0" in text
    assert "Runs Queued 2 Running 2 Paused 1 Waiting 0" in text


def test_the_oldest_waiting_executions_say_why_they_wait(busy):
    page = staff_client().get(PAGE).content.decode()
    section = text_of(page[page.index("Oldest waiting executions"):page.index(
        "Concurrency slots")])
    holder_run = busy["holder"].run_id
    assert (f"#{busy['waiting'].pk} deploy #{busy['waiting'].run_id} demo/deploy Pending"
            in section)
    assert f"waiting for slot site:a (limit 1), held by run {holder_run}" in section
    assert "the run is paused: resume it to let this start" in section
    assert "retry backoff: may start in" in section
    # The oldest is marked.
    assert f'<tr class="sy-oldest">\n        <td><a href="/admin/runs/execution/' \
           f'{busy["waiting"].pk}/change/"' in page


def test_concurrency_slots_show_their_holders_against_the_limit(busy):
    page = staff_client().get(PAGE).content.decode()
    section = page[page.index("Concurrency slots"):page.index("<h2>django-q2</h2>")]
    text = text_of(section)
    holder = busy["holder"]
    assert f"site:a 1 of 1 #{holder.pk} deploy of run #{holder.run_id} (running on vm:1) 1" \
        in text
    assert f"site:b 1 of 1 #{busy['orphan'].pk} deploy" in text
    # Full keys first, and a link to the executions pending for the key.
    assert text.index("site:a") < text.index("site:c")
    assert "?status__exact=pending&amp;concurrency_key=site%3Aa" in section


def test_no_worker_alive_is_said_first_and_on_each_waiting_row(site_task):
    worker("vm:9", seen_ago=3600 * 2)  # long gone: not even listed
    launch(site_task, site="a")
    text = text_of(staff_client().get(PAGE).content.decode())
    assert "No worker is alive, so nothing queued will start" in text
    assert "No worker seen in the last hour" in text
    assert "no worker alive: start one with manage.py qcluster" in text


def test_an_overdue_reaper_is_flagged_while_workers_are_alive(db):
    worker("vm:1")
    ReaperTick.objects.update_or_create(
        pk=1, defaults={"last_run_at": timezone.now() - timedelta(minutes=10)})
    text = text_of(staff_client().get(PAGE).content.decode())
    assert "The reaper has not run since" in text


def test_a_reaper_that_never_ran_is_not_flagged_while_workers_are_starting(db):
    worker("vm:1")  # started an hour ago: overdue
    text = text_of(staff_client().get(PAGE).content.decode())
    assert "The reaper has not run yet" in text and "Last pass never" in text
    WorkerProcess.objects.update(started_at=timezone.now() - timedelta(seconds=5))
    text = text_of(staff_client("other").get(PAGE).content.decode())
    assert "The reaper has not run" not in text and "Last pass never" in text


def test_ages_are_shown_to_the_second(db):
    worker("vm:1", seen_ago=7)
    worker("vm:3", seen_ago=125)
    text = text_of(staff_client().get(PAGE).content.decode())
    assert re.search(r"vm:1 alive \S+ \S+ [78] s ago idle", text)
    assert re.search(r"vm:3 silent \S+ \S+ 2 min [56] s ago idle", text)


def test_the_q2_pages_are_linked_and_open(busy):
    client = staff_client()
    page = client.get(PAGE).content.decode()
    for url in ["/admin/django_q/ormq/", "/admin/django_q/failure/", "/admin/django_q/success/",
                "/admin/django_q/schedule/", "/admin/jobs/workerprocess/",
                "/admin/jobs/reapertick/"]:
        assert f'href="{url}"' in page, url
        assert client.get(url).status_code == 200, url
    # Two messages in q2's queue: the two executions queued above.
    assert "Taken by a worker" in page


def test_the_poll_swaps_the_body_and_pauses_in_hidden_tabs(busy):
    client = staff_client()
    page = client.get(PAGE).content.decode()
    assert "htmx.min.js" in page
    assert ('hx-trigger="every 10s [document.visibilityState === \'visible\'], '
            "visibilitychange[document.visibilityState === 'visible'] from:document\"") in page
    assert f'<a href="{PAGE}">Refresh now</a>' in page  # and without JavaScript
    fragment = client.get(PAGE, headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<div id="queue-body"') and "<html" not in fragment
    assert "Concurrency slots" in fragment


def test_the_admin_index_and_sidebar_link_to_the_page(db):
    page = staff_client().get("/admin/").content.decode()
    assert f'<a href="{PAGE}">Workers and queue</a>' in page


def test_only_staff_with_the_worker_view_permission_see_it(db):
    outsider = staff_client("clerk", superuser=False, perms=("runs.view_run",))
    assert outsider.get(PAGE).status_code == 403
    assert "Workers and queue" not in outsider.get("/admin/").content.decode()
    allowed = staff_client("ops", superuser=False, perms=("jobs.view_workerprocess",))
    assert allowed.get(PAGE).status_code == 200
    from django.test import Client

    anonymous = Client().get(PAGE)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]


def test_the_page_costs_the_same_queries_however_much_it_lists(site_task):
    client = staff_client()

    def add(n: int) -> None:
        for i in range(n):
            name = f"vm:{WorkerProcess.objects.count() + 100}"
            worker(name)
            running_on(launch(site_task, site=f"s{name}"), name)
            launch(site_task, site=f"s{name}")  # pending for the same key
            launch(site_task, site=f"free{i}{name}")
        dispatch()

    add(2)
    with_n = queries_for(client, PAGE)
    add(4)
    assert queries_for(client, PAGE) == with_n == 14


def test_every_execution_behind_a_full_key_says_which_runs_hold_it(site_task):
    worker("vm:1")
    holder = running_on(launch(site_task, site="a"), "vm:1")
    first, second = (launch(site_task, site="a").executions.get() for _ in range(2))
    dispatch()  # writes the reason on the first one it finds blocked, skips the rest of the key
    second.refresh_from_db()
    assert second.waiting_reason == ""
    page = staff_client().get(PAGE).content.decode()
    section = text_of(page[page.index("Oldest waiting executions"):page.index(
        "Concurrency slots")])
    expected = f"waiting for slot site:a (limit 1), held by run {holder.run_id}"
    assert section.count(expected) == 2
    execution_page = staff_client("other").get(f"/admin/runs/execution/{second.pk}/change/")
    assert expected in execution_page.content.decode()
