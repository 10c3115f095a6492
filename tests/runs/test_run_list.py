"""The run list's filters beyond project/task/status/trigger (tests/runs/test_views.py has
those): who launched, which days, a search by run id or task, "My runs", and bad values of
each as a form error, never a 500.

Personas come from tests/conftest.py: alice (maintainer), bob (operator), carol (viewer) of
project `demo`, and mallory, who is in no project.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from runs.models import Run, Trigger
from runs.services import run_launch
from runs.transitions import Actor
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db


def launch(task, user, **params) -> Run:
    run, _ = run_launch(task=task, raw_params=params or {"name": "Ada"},
                        actor=Actor(user=user, via="ui", label=user.username),
                        trigger=Trigger.UI)
    return run


def listed(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'class="run-link">#(\d+)<', page)]


def test_filter_by_who_launched(client_for, hello_task, personas):
    bobs = [launch(hello_task, personas["bob"]) for _ in range(2)]
    launch(hello_task, personas["alice"])
    page = client_for("carol").get("/runs/?by=bob").content.decode()
    assert listed(page) == [r.pk for r in reversed(bobs)]
    assert 'id="filter-by" name="by" value="bob"' in page
    assert '<option value="alice">' in page  # the people of carol's projects, as hints


def test_my_runs_is_the_filter_by_me(client_for, hello_task, personas):
    own = launch(hello_task, personas["bob"])
    launch(hello_task, personas["alice"])
    client = client_for("bob")
    everyone = client.get("/runs/").content.decode()
    assert re.search(r'<a href="/runs/\?by=bob">My runs</a>', everyone)
    assert re.search(r'<a href="/runs/" aria-current="page">All runs</a>', everyone)
    mine = client.get("/runs/?by=bob").content.decode()
    assert listed(mine) == [own.pk]
    assert re.search(r'<a href="/runs/\?by=bob" aria-current="page">My runs</a>', mine)


def test_filter_by_days_includes_both_ends(client_for, hello_task, personas):
    runs = [launch(hello_task, personas["bob"]) for _ in range(4)]
    days = [datetime(2025, 3, d, 12, tzinfo=UTC) for d in (1, 2, 3, 4)]
    for run, day in zip(runs, days, strict=True):
        Run.objects.filter(pk=run.pk).update(created_at=day)
    client = client_for("carol")
    page = client.get("/runs/?from=2025-03-02&to=2025-03-03").content.decode()
    assert listed(page) == [runs[2].pk, runs[1].pk]
    assert listed(client.get("/runs/?from=2025-03-04").content.decode()) == [runs[3].pk]
    assert listed(client.get("/runs/?to=2025-03-01").content.decode()) == [runs[0].pk]


def test_search_by_run_id_or_task(client_for, project, hello_task, personas):
    deploy = TaskFactory(project=project, slug="deploy-site", name="Deploy the site")
    hello = launch(hello_task, personas["bob"])
    shipped = launch(deploy, personas["bob"])
    client = client_for("carol")
    assert listed(client.get(f"/runs/?q=%23{hello.pk}").content.decode()) == [hello.pk]
    assert listed(client.get(f"/runs/?q={hello.pk}").content.decode()) == [hello.pk]
    assert listed(client.get("/runs/?q=the+SITE").content.decode()) == [shipped.pk]
    assert listed(client.get("/runs/?q=deploy-si").content.decode()) == [shipped.pk]
    page = client.get("/runs/?q=nothing-like-this").content.decode()
    assert listed(page) == [] and "No runs match these filters." in page


def test_a_search_for_a_run_of_another_project_finds_nothing(client_for, hello_task, personas):
    run = launch(hello_task, personas["bob"])
    assert listed(client_for("mallory").get(f"/runs/?q={run.pk}").content.decode()) == []


def test_status_counts_follow_the_other_filters(client_for, hello_task, personas):
    launch(hello_task, personas["bob"])
    launch(hello_task, personas["alice"])
    page = client_for("carol").get("/runs/?by=alice").content.decode()
    assert re.search(r'href="/runs/\?by=alice&amp;status=queued".*?'
                     r'<span class="chip-count">1</span>', page, re.S)


def test_the_filters_survive_paging(client_for, hello_task, personas, monkeypatch):
    monkeypatch.setattr("runs.views.RUN_PAGE", 1)
    for _ in range(2):
        launch(hello_task, personas["bob"])
    page = client_for("carol").get("/runs/?by=bob&q=hello").content.decode()
    older = re.search(r'href="(/runs/\?[^"]+)" rel="next"', page).group(1)
    assert "by=bob" in older and "q=hello" in older and "cursor=" in older


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("from=yesterday", "from", "is not a date; use the form YYYY-MM-DD"),
        ("to=2025-02-30", "to", "is not a date"),
        ("from=2025-03-05&to=2025-03-01", "to", "is before the From day"),
        ("by=not%20a%20user!", "by", "is not a username"),
        ("q=" + "x" * 101, "q", "search with at most 100"),
    ],
)
def test_bad_filter_values_are_a_form_error(client_for, hello_task, query, field, message):
    response = client_for("bob").get(f"/runs/?{query}")
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page
    assert f'id="filter-{field}"' in page
    assert re.search(rf'id="filter-{field}"[^>]*aria-invalid="true"', page)
    assert "Some filters are invalid" in page


@pytest.mark.parametrize(
    "query",
    ["from=9999-12-31", "to=9999-12-31", "from=0001-01-01", "q=%23999999999999999999",
     "q=" + "9" * 19, "q=%23", "by=" + "a" * 150, "by=" + "a" * 151, "q=%F0%9F%92%A5",
     "from[]=1&to=", "q=%27%22%3C%3E", "cursor=x&q=1"],
)
def test_no_filter_value_causes_a_500(client_for, hello_task, personas, query):
    launch(hello_task, personas["bob"])
    assert client_for("bob").get(f"/runs/?{query}").status_code in (200, 400)
