"""The project page (runs.views.project_detail): tasks with their last run, the chart of recent
run durations and outcomes (runs.charts), a glimpse of the members; and the chart's geometry.

Personas come from tests/conftest.py: alice (maintainer), bob (operator), carol (viewer) of
project `demo`, and mallory, who is in no project.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from runs.charts import duration_chart, short_duration
from runs.models import ExecutionStatus, Role, Run, Trigger
from runs.services import run_launch
from runs.transitions import Actor, execution_claim, execution_finish, execution_queue
from tests.factories import MembershipFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db


def launch(task, user) -> Run:
    run, _ = run_launch(task=task, raw_params={"name": "Ada"},
                        actor=Actor(user=user, via="ui", label=user.username),
                        trigger=Trigger.UI)
    return run


def ended(task, user, status: str = ExecutionStatus.SUCCEEDED, seconds: int = 30) -> Run:
    run = launch(task, user)
    execution = run.executions.get()
    assert execution_queue(execution_id=execution.pk)
    attempt = execution_claim(execution_id=execution.pk, worker="w:1")
    execution_finish(execution_id=execution.pk, attempt_number=attempt.number, status=status,
                     exit_code=0)
    start = timezone.now() - timedelta(hours=1)
    Run.objects.filter(pk=run.pk).update(started_at=start,
                                         finished_at=start + timedelta(seconds=seconds))
    return Run.objects.select_related("task").get(pk=run.pk)


def test_each_task_shows_its_last_run(client_for, project, hello_task, personas):
    never = TaskFactory(project=project, slug="never", name="Never ran")
    ended(hello_task, personas["bob"], ExecutionStatus.FAILED)
    last = launch(hello_task, personas["bob"])
    page = client_for("carol").get("/p/demo/").content.decode()
    hello_row = re.search(rf'<li class="card task-row">(?:(?!</li>).)*?{hello_task.name}.*?</li>',
                          page, re.S).group(0)
    assert f'href="/runs/{last.pk}/"' in hello_row
    assert 'class="badge badge-queued">Queued<' in hello_row
    never_row = re.search(rf'<li class="card task-row">(?:(?!</li>).)*?{never.name}.*?</li>',
                          page, re.S).group(0)
    assert "Never run" in never_row


def test_the_chart_draws_ended_runs_with_outcomes_not_by_colour_alone(client_for, hello_task,
                                                                      personas):
    ended(hello_task, personas["bob"], ExecutionStatus.SUCCEEDED, seconds=30)
    ended(hello_task, personas["bob"], ExecutionStatus.FAILED, seconds=90)
    launch(hello_task, personas["bob"])  # still queued: not in the chart
    page = client_for("carol").get("/p/demo/").content.decode()
    assert len(re.findall(r'<a class="chart-bar-link"', page)) == 2
    assert "Last 2 ended runs: 1 succeeded, 1 failed. Median duration 1 min, longest 1 min 30 s." \
        in page
    assert re.search(r'<rect class="chart-bar bar-failed"', page)
    assert 'class="chart-glyph glyph-failed"' in page and "✕</text>" in page
    assert re.search(r"<title>Run #\d+ · Hello · Failed · 1 min 30 s</title>", page)
    assert "Show these runs as a table" in page
    assert 'aria-labelledby="chart-heading chart-summary"' in page


def test_a_project_without_ended_runs_says_so_instead_of_a_chart(client_for, hello_task,
                                                                 personas):
    launch(hello_task, personas["bob"])
    page = client_for("carol").get("/p/demo/").content.decode()
    assert "No run of this project has ended yet" in page
    assert "<svg class=\"chart\"" not in page


def test_the_project_page_shows_members_and_links_to_all_of_them(client_for, project,
                                                                 personas):
    page = client_for("carol").get("/p/demo/").content.decode()
    names = re.findall(r'<span class="member-name">([^<]+)</span>', page)
    assert names == ["alice", "bob", "carol"]  # maintainers first
    assert 'href="/p/demo/members/">All<' in page
    assert 'href="/p/demo/members/">Manage<' in client_for("alice").get("/p/demo/").content.decode()


def test_the_project_page_query_count_does_not_grow(client_for, project, personas,
                                                    django_assert_num_queries):
    # session, user, project, role (project_get), runs, role, tasks with their last run,
    # chart runs, members, and the worker banner's two.
    def more(n: int) -> None:
        for _ in range(n):
            task = TaskFactory(project=project)
            ended(task, personas["bob"])
            launch(task, personas["bob"])
            MembershipFactory(project=project, user=UserFactory(), role=Role.VIEWER)

    client = client_for("carol")
    more(3)
    with django_assert_num_queries(11):
        assert client.get("/p/demo/").status_code == 200
    more(6)
    with django_assert_num_queries(11):
        assert client.get("/p/demo/").status_code == 200


# --- the chart's geometry --------------------------------------------------------------------


def test_bars_are_scaled_to_the_longest_run_with_round_ticks(hello_task, personas):
    runs = [ended(hello_task, personas["bob"], seconds=s) for s in (0, 100, 250)]
    chart = duration_chart(runs)
    assert [label for _y, label in chart.ticks] == ["0", "1 min", "2 min", "3 min", "4 min",
                                                     "5 min"]
    heights = [bar.height for bar in chart.bars]
    assert heights[0] == 2.0  # a run that took no time still shows
    assert heights[2] == pytest.approx(2.5 * heights[1], rel=0.01)
    assert all(bar.y + bar.height == pytest.approx(chart.baseline) for bar in chart.bars)
    lefts = [bar.x for bar in chart.bars]
    assert lefts == sorted(lefts) and lefts[0] >= chart.left
    assert chart.bars[-1].x + chart.bars[-1].width <= chart.right_edge


def test_a_run_cancelled_before_it_started_has_no_duration(hello_task, personas):
    from runs.transitions import run_cancel

    run = launch(hello_task, personas["bob"])
    run_cancel(run_id=run.pk, actor=Actor(via="api", label="bob"))
    chart = duration_chart([Run.objects.select_related("task").get(pk=run.pk)])
    assert chart.bars[0].duration == "0 s" and chart.bars[0].glyph == "⊘"
    assert chart.summary.startswith("Last 1 ended run: 1 cancelled.")


def test_no_runs_no_bars():
    chart = duration_chart([])
    assert chart.bars == [] and chart.summary == "No run of this project has ended yet."


@pytest.mark.parametrize(("seconds", "text"), [(0, "0"), (45, "45 s"), (300, "5 min"),
                                               (5400, "1.5 h"), (172800, "2 d")])
def test_axis_labels_are_short(seconds, text):
    assert short_duration(seconds) == text
