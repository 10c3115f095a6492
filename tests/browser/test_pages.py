"""The pages in a real browser (headless Chromium), against the live server and a real worker
cluster: log in, launch (a bad parameter first), watch a log grow, cancel a slow run, approve a
waiting run, filter the list, and what viewers and outsiders are (not) offered.

Every wait is on a condition in the page (Playwright's expect) or in the database (wait_for),
never a sleep. Personas come from tests/conftest.py: alice (maintainer), bob (operator),
carol (viewer) of project `demo`; mallory is in no project.
"""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from runs.models import Execution, ExecutionStatus, Run, RunStatus, Trigger
from runs.services import run_launch
from runs.transitions import (
    Actor,
    execution_claim,
    execution_finish,
    execution_queue,
    run_cancel,
)
from tests.browser.conftest import login
from tests.conftest import wait_for
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db(transaction=True)

# Prints "step i of n" every `pause` seconds: a log that visibly grows, and a run slow enough to
# cancel.
SLOW_SCRIPT = (
    "import sys, time\n"
    "n, pause = int(sys.argv[1]), float(sys.argv[2])\n"
    "print('warming up', flush=True)\n"
    "for i in range(1, n + 1):\n"
    "    print(f'step {i} of {n}: working...', flush=True)\n"
    "    time.sleep(pause)\n"
    "print('done', flush=True)\n"
)
FAIL_SCRIPT = (
    "import sys\n"
    "print('checking preconditions...', flush=True)\n"
    "print('error: the disk is full', file=sys.stderr, flush=True)\n"
    "sys.exit(3)\n"
)


@pytest.fixture
def tasks(project, tmp_path):
    """The tasks these tests launch, in project `demo`."""
    steps = tmp_path / "steps.py"
    steps.write_text(SLOW_SCRIPT)
    greet = TaskFactory(
        project=project, slug="greet", name="Greet", timeout_seconds=60,
        description="Prints a greeting; shows every kind of parameter.",
        spec={"argv": ["echo", "Hello, {{ name }}! ({{ style }}, x{{ count }})"]},
        params_schema=[
            {"name": "name", "type": "string", "label": "Name", "required": True,
             "max_length": 50, "help": "Who to greet."},
            {"name": "count", "type": "integer", "label": "Repeat", "min": 1, "max": 10,
             "default": 1},
            {"name": "style", "type": "choice", "label": "Style",
             "choices": ["casual", "formal"], "default": "casual"},
            {"name": "loud", "type": "boolean", "label": "Shout it"},
            {"name": "note", "type": "text", "label": "Note",
             "help": "Free text, kept with the run."},
            {"name": "api_key", "type": "secret", "label": "API key",
             "help": "Reaches the program as an environment variable only."},
        ],
    )
    slow = TaskFactory(
        project=project, slug="slow", name="Slow", timeout_seconds=300,
        description="Prints a line every half second.",
        spec={"argv": ["python3", "-u", str(steps), "{{ steps }}", "{{ pause }}"]},
        params_schema=[{"name": "steps", "type": "integer", "min": 1, "max": 500,
                        "default": 60},
                       {"name": "pause", "type": "number", "min": 0, "max": 5,
                        "default": 0.5}],
    )
    fail = TaskFactory(project=project, slug="fail", name="Fail", timeout_seconds=60,
                       description="Exits with code 3.", params_schema=[],
                       spec={"argv": ["python3", "-c", FAIL_SCRIPT]})
    deploy = TaskFactory(
        project=project, slug="deploy", name="Deploy with approval", kind="pipeline",
        timeout_seconds=120, description="Builds, then waits for an operator's approval.",
        params_schema=[{"name": "version", "type": "string", "default": "2.1.0"}],
        spec={"stages": [
            {"name": "build", "steps": [{"name": "package", "command": [
                "python3", "-c", "print('building release {{ version }}')"]}]},
            {"name": "production", "approval": {"role": "operator"},
             "steps": [{"name": "ship", "command": [
                 "python3", "-c", "print('deploying {{ version }} to production')"]}]},
        ]},
    )
    return {"greet": greet, "slow": slow, "fail": fail, "deploy": deploy}


def launch(task, user, **params) -> Run:
    run, _ = run_launch(task=task, raw_params=params,
                        actor=Actor(user=user, via="ui", label=user.username),
                        trigger=Trigger.UI)
    return run


def ended(run: Run) -> Run:
    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, timeout=90,
             message=f"run {run.pk} to end")
    return Run.objects.get(pk=run.pk)


def waiting(run: Run) -> Run:
    wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.WAITING, timeout=90,
             message=f"run {run.pk} to wait for its approval")
    return Run.objects.get(pk=run.pk)


def history(tasks, user, count: int = 24) -> list[Run]:
    """`count` ended runs of greet and slow, oldest first, with durations and outcomes that
    vary, driven through the real transitions (no worker needed). The timestamps are then
    spread over the last hours, so the chart has something to show."""
    outcomes = ["succeeded"] * 5 + ["failed", "succeeded", "succeeded", "timed_out",
                                     "succeeded", "cancelled", "succeeded"]
    now = timezone.now()
    runs = []
    for i in range(count):
        task = tasks["slow"] if i % 3 == 0 else tasks["greet"]
        run = launch(task, user, **({} if i % 3 == 0 else {"name": f"run {i}"}))
        execution = run.executions.get()
        outcome = outcomes[i % len(outcomes)]
        if outcome == "cancelled":
            run_cancel(run_id=run.pk, actor=Actor(user=user, via="ui", label=user.username))
        else:
            execution_queue(execution_id=execution.pk)  # unless the launch's dispatch did
            attempt = execution_claim(execution_id=execution.pk, worker="w:1")
            execution_finish(execution_id=execution.pk, attempt_number=attempt.number,
                             status=outcome, exit_code=0 if outcome == "succeeded" else 1)
        start = now - timedelta(minutes=(count - i) * 9)
        took = timedelta(seconds=(40 if task == tasks["slow"] else 8) + (i * 37) % 150)
        Run.objects.filter(pk=run.pk).update(
            created_at=start, started_at=None if outcome == "cancelled" else start,
            finished_at=start + took)
        runs.append(run)
    return runs


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


# --- log in and the dashboard ---------------------------------------------------------------


def test_log_in_and_see_the_dashboard(pages, worker, tasks, personas, shot):
    bob, alice = personas["bob"], personas["alice"]
    ended(launch(tasks["greet"], bob, name="Ada"))
    ended(launch(tasks["fail"], alice))
    ended(launch(tasks["greet"], alice, name="Grace", style="formal"))
    gate = waiting(launch(tasks["deploy"], bob, version="2.1.0"))
    running = launch(tasks["slow"], bob, steps=200, pause=0.5)
    wait_for(lambda: Run.objects.get(pk=running.pk).status == RunStatus.RUNNING, timeout=60,
             message="the slow run to start")

    page = pages.new()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=%2F$"))
    login(page, "bob")

    tiles = page.get_by_role("list", name="Runs at a glance")
    expect(tiles.get_by_role("link", name="1 Running now")).to_be_visible()
    expect(tiles.get_by_role("link", name="1 Waiting for approval")).to_be_visible()
    expect(tiles.get_by_role("link", name="1 Failed or timed out, last 24 h")).to_be_visible()
    expect(tiles.get_by_role("link", name="2 Succeeded, last 24 h")).to_be_visible()
    approvals = page.get_by_role("region", name="Waiting for your approval")
    expect(approvals.get_by_role("link", name=f"Run #{gate.pk}", exact=True)).to_be_visible()
    table = page.get_by_role("table", name="Latest runs in your projects")
    expect(table.get_by_role("row")).to_have_count(6)  # the header and five runs
    expect(page.locator("#worker-banner")).to_be_empty()  # a worker is alive: no banner
    shot(page, "dashboard")

    # "Mine": only bob's runs.
    page.get_by_role("navigation", name="Whose runs").get_by_role("link", name="Mine").click()
    mine = page.get_by_role("table", name="Your latest runs")
    expect(mine.get_by_role("row")).to_have_count(4)

    # The running run's row ends live, without a reload (the rows poll while it runs).
    run_cancel(run_id=running.pk, actor=Actor(user=bob, via="ui", label="bob"))
    row = mine.get_by_role("row").filter(has=page.get_by_role("link", name=f"#{running.pk}"))
    expect(row.get_by_text("Cancelled")).to_be_visible()
    expect(tiles.get_by_role("link", name="0 Running now")).to_be_visible()


def test_a_phone_sized_screen_gets_every_page_without_sideways_scrolling(pages, tasks, personas,
                                                                        shot):
    history(tasks, personas["alice"], count=6)
    run = launch(tasks["greet"], personas["bob"], name="Ada")
    page = pages.logged_in("alice", width=375, height=812)
    for path in ("/", "/runs/", "/p/demo/", f"/runs/{run.pk}/", "/p/demo/tasks/greet/launch",
                 "/p/demo/members/", "/account/"):
        page.goto(path)
        expect(page.locator("main")).to_be_visible()
        assert no_horizontal_scroll(page), f"{path} scrolls sideways on a phone"
        shot(page, "phone" + path.replace("/", "-").rstrip("-"), docs=False)
    page.goto("/")
    shot(page, "dashboard-phone")


def test_the_skip_link_comes_first_and_leads_to_the_content(pages, personas):
    page = pages.logged_in("carol")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


# --- launch ------------------------------------------------------------------------------------


def test_launch_with_a_bad_parameter_shows_the_field_error_then_launches(pages, worker, tasks,
                                                                         personas, shot):
    page = pages.logged_in("bob")
    page.goto("/p/demo/")
    page.get_by_role("link", name="Launch Greet").click()
    expect(page.get_by_role("heading", name="Launch Greet")).to_be_visible()
    page.get_by_label("Name").fill("Ada")
    page.get_by_label("Note").fill("Launched from the browser test.")
    shot(page, "launch-form")

    page.get_by_label("Repeat").fill("42")
    page.get_by_label("API key").fill("k-123-secret")
    page.get_by_role("button", name="Launch run").click()

    summary = page.locator("#form-error")
    expect(summary).to_be_focused()  # the error summary takes focus
    expect(summary).to_contain_text("Repeat: must be at most 10")
    expect(page.locator("#param-count-error")).to_have_text("Must be at most 10.")
    expect(page.get_by_label("Repeat")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Name")).to_have_value("Ada")  # what was typed is kept...
    expect(page.get_by_label("API key")).to_have_value("")  # ...except the secret
    assert "k-123-secret" not in page.content()
    assert not Run.objects.exists()
    shot(page, "launch-form-errors", full_page=False)
    # The summary's link leads to the field.
    summary.get_by_role("link", name=re.compile("Repeat")).click()
    expect(page.get_by_label("Repeat")).to_be_focused()

    page.get_by_label("Repeat").fill("3")
    page.get_by_label("Style").select_option("formal")
    page.get_by_label("API key").fill("k-123-secret")
    page.get_by_role("button", name="Launch run").click()

    run = Run.objects.get()
    expect(page).to_have_url(re.compile(rf"/runs/{run.pk}/$"))
    expect(page.get_by_text(f"Run #{run.pk} of Greet launched.")).to_be_visible()
    header = page.locator("#run-header")
    expect(header.locator(".badge")).to_have_text("Succeeded")
    expect(page.locator(f"#log-{run.executions.get().pk}")).to_contain_text(
        "Hello, Ada! (formal, x3)")
    params = page.get_by_role("region", name="Parameters")
    expect(params).to_contain_text("********")  # the secret, masked
    assert "k-123-secret" not in page.content()

    # Launch again: the form comes filled in, the secret does not.
    page.get_by_role("link", name="Launch again with these parameters").click()
    expect(page.get_by_text(f"Parameters copied from run #{run.pk}")).to_be_visible()
    expect(page.get_by_label("Repeat")).to_have_value("3")
    expect(page.get_by_label("Style")).to_have_value("formal")
    expect(page.get_by_label("API key")).to_have_value("")


# --- a live run --------------------------------------------------------------------------------


def test_the_log_grows_live_and_can_be_paused_and_followed(pages, worker, tasks, personas):
    run = launch(tasks["slow"], personas["bob"], steps=60, pause=0.4)
    execution = run.executions.get()
    page = pages.logged_in("carol")
    page.goto(f"/runs/{run.pk}/")
    log = page.locator(f"#log-{execution.pk}")
    expect(log).to_contain_text("step 2 of 60")
    expect(page.locator("#run-header .badge")).to_have_text("Running")
    # New lines arrive without a reload.
    expect(log).to_contain_text("step 8 of 60")

    follow = page.get_by_role("button", name="Follow")
    expect(follow).to_have_attribute("aria-pressed", "true")
    follow.click()
    expect(follow).to_have_attribute("aria-pressed", "false")
    expect(page.get_by_role("button", name=re.compile(r"Jump to end \(\d+ new lines?\)"))
           ).to_be_visible()
    page.get_by_role("button", name=re.compile("Jump to end")).click()
    expect(follow).to_have_attribute("aria-pressed", "true")
    page.wait_for_function("(el) => el.scrollHeight - el.scrollTop - el.clientHeight < 24",
                           arg=log.element_handle())
    # The whole log, as a download.
    with page.expect_download() as download:
        page.get_by_role("link", name=re.compile("^Download")).click()
    assert download.value.suggested_filename == f"run-{run.pk}-slow.log"


def test_an_operator_cancels_a_slow_run(pages, worker, tasks, personas, shot):
    run = launch(tasks["slow"], personas["alice"], steps=400, pause=0.5)
    page = pages.logged_in("bob")
    page.goto(f"/runs/{run.pk}/")
    expect(page.locator(f"#log-{run.executions.get().pk}")).to_contain_text("step 12 of 400")
    shot(page, "run-live")
    page.get_by_label("Reason").fill("wrong branch")
    page.get_by_role("button", name="Cancel run").click()
    assert page.dialogs and page.dialogs[-1].startswith(f"Cancel run #{run.pk}?")
    expect(page.locator("#run-header .badge")).to_have_text("Cancelled")
    expect(page.locator("#run-header")).to_contain_text("cancelled by bob: wrong branch")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(page.get_by_role("button", name="Re-run all")).to_be_visible()
    assert Execution.objects.get(run=run).status == ExecutionStatus.CANCELLED


def test_an_operator_approves_a_waiting_run(pages, worker, tasks, personas):
    waiting(launch(tasks["deploy"], personas["alice"], version="3.0.0"))
    page = pages.logged_in("bob")
    page.goto("/")
    page.get_by_role("region", name="Waiting for your approval").get_by_role(
        "link", name=re.compile("^Review")).click()
    expect(page.locator("#run-header")).to_contain_text(
        "Waiting for approval: stage production needs an operator or a maintainer")
    page.get_by_label(re.compile("^Comment")).fill("Staging looks good")
    page.get_by_role("button", name="Approve").click()
    assert page.dialogs[-1].startswith("Approve stage production")
    decision = page.locator(".approval-decision")
    expect(decision).to_contain_text("Approved by bob")
    expect(decision.locator("q")).to_have_text("Staging looks good")
    expect(page.locator("#run-header .badge")).to_have_text("Succeeded")
    expect(page.get_by_text("deploying 3.0.0 to production", exact=True)).to_be_visible()


# --- the run list -------------------------------------------------------------------------------


def test_filter_the_run_list(pages, tasks, personas):
    bob, alice = personas["bob"], personas["alice"]
    greets = [launch(tasks["greet"], bob, name=f"n{i}") for i in range(3)]
    slow = launch(tasks["slow"], alice)
    page = pages.logged_in("carol")
    page.goto("/runs/")
    rows = page.locator("#run-rows tr")
    expect(rows).to_have_count(4)

    page.get_by_label("Task").select_option("slow")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"task=slow"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"#{slow.pk}")

    page.get_by_role("link", name="Clear").click()
    page.get_by_label("Launched by").fill("bob")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(3)

    page.get_by_role("link", name="Clear").click()
    page.get_by_role("searchbox", name="Search").fill(f"#{greets[1].pk}")
    page.get_by_role("searchbox", name="Search").press("Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"#{greets[1].pk}")

    # A status chip filters by status; a bad value is a message on the form, not an error page.
    page.goto("/runs/")
    page.get_by_role("list", name=re.compile("Runs by status")).get_by_role(
        "link", name=re.compile("Queued")).click()
    expect(rows).to_have_count(4)
    page.goto("/runs/?from=yesterday")
    expect(page.get_by_role("alert")).to_contain_text("is not a date")
    expect(page.get_by_label(re.compile("^From"))).to_have_attribute("aria-invalid", "true")


# --- who sees what -------------------------------------------------------------------------------


def test_viewers_and_outsiders_see_no_controls_they_may_not_use(pages, tasks, personas):
    run = launch(tasks["slow"], personas["bob"])

    carol = pages.logged_in("carol")
    carol.goto(f"/runs/{run.pk}/")
    expect(carol.locator("#run-header")).to_be_visible()
    expect(carol.get_by_role("region", name="Parameters")).to_be_visible()
    for name in ("Cancel", "Pause", "Resume", "Re-run"):
        expect(carol.get_by_role("button", name=re.compile(f"^{name}"))).to_have_count(0)
    expect(carol.get_by_role("link", name="Launch again with these parameters")).to_have_count(0)
    carol.goto("/p/demo/")
    expect(carol.get_by_role("link", name=re.compile("^Launch"))).to_have_count(0)
    carol.goto("/p/demo/tasks/slow/launch")
    expect(carol.get_by_role("button", name="Launch run")).to_have_count(0)
    expect(carol.get_by_text("Launching needs the operator role")).to_be_visible()
    carol.goto("/p/demo/members/")
    expect(carol.get_by_role("button", name=re.compile("^(Remove|Change|Add)"))).to_have_count(0)
    carol.goto("/account/")
    expect(carol.get_by_role("button", name="Create token")).to_be_visible()  # her own

    mallory = pages.logged_in("mallory")
    expect(mallory.get_by_text("No projects yet")).to_be_visible()
    for path in (f"/runs/{run.pk}/", "/p/demo/", "/p/demo/members/",
                 "/p/demo/tasks/slow/launch"):
        response = mallory.goto(path)
        assert response.status == 404, path
        expect(mallory.get_by_role("heading", name="Not found")).to_be_visible()
    mallory.goto("/runs/")
    expect(mallory.locator("#run-rows")).to_contain_text("No runs match these filters.")


def test_the_worker_banner_shows_while_nothing_can_run(pages, tasks, personas):
    launch(tasks["greet"], personas["bob"], name="Ada")  # no worker in this test
    page = pages.logged_in("carol")
    banner = page.locator("#worker-banner")
    expect(banner).to_contain_text("No worker is running. 1 execution is waiting")
    expect(banner).to_contain_text("Tell whoever runs Switchyard")
    page.goto("/runs/")
    expect(banner).to_be_visible()
    mallory = pages.logged_in("mallory")  # nothing of hers waits
    expect(mallory.locator("#worker-banner")).to_be_empty()


# --- project, members, account --------------------------------------------------------------


def test_the_project_page_shows_tasks_a_chart_and_members(pages, tasks, personas, shot):
    runs = history(tasks, personas["alice"])
    page = pages.logged_in("carol")
    page.goto("/runs/")
    shot(page, "run-list", full_page=False)
    page.goto("/p/demo/")
    greet = page.locator(".task-row").filter(has=page.get_by_role("heading", name="Greet"))
    expect(greet.locator(".task-last")).to_contain_text(f"#{runs[-1].pk}")
    expect(page.locator(".task-row").filter(
        has=page.get_by_role("heading", name="Fail")).locator(".task-last")).to_have_text(
        "Never run")
    bars = page.locator("svg.chart a.chart-bar-link")
    expect(bars).to_have_count(24)
    expect(page.locator("#chart-summary")).to_contain_text(
        "Last 24 ended runs: 18 succeeded, 2 failed, 2 timed out, 2 cancelled.")
    expect(page.get_by_role("list", name="Outcomes")).to_contain_text("Failed (2)")
    members = page.get_by_role("region", name="Members")
    expect(members).to_contain_text("alice")
    shot(page, "project")
    bars.last.click()  # a bar is a link to its run
    expect(page).to_have_url(re.compile(rf"/runs/{runs[-1].pk}/$"))


def test_a_maintainer_manages_the_members(pages, personas, shot):
    page = pages.logged_in("alice")
    page.goto("/p/demo/")
    page.get_by_role("navigation", name="Demo").get_by_role("link", name="Members").click()
    page.get_by_label("Username").fill("nobody")
    page.get_by_role("button", name="Add member").click()
    expect(page.locator("#add-username-error")).to_contain_text("No active user")
    expect(page.get_by_label("Username")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Username").fill("mallory")
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Add member").click()
    expect(page.get_by_text("mallory is now viewer of Demo.")).to_be_visible()

    row = page.locator("tr", has=page.get_by_role("rowheader", name="mallory"))
    row.get_by_label("Role of mallory").select_option("operator")
    row.get_by_role("button", name="Change the role of mallory").click()
    assert page.dialogs[-1] == "Change the role of mallory in Demo?"
    expect(page.get_by_text("mallory is now operator of Demo.")).to_be_visible()
    changes = page.get_by_role("region", name="Recent changes")
    expect(changes.get_by_role("listitem").first).to_contain_text(
        "alice made mallory operator (was viewer)")
    shot(page, "members")

    # The last maintainer keeps the role: a message says what to do instead.
    me = page.locator("tr", has=page.get_by_role("rowheader", name="alice"))
    me.get_by_label("Role of alice").select_option("viewer")
    me.get_by_role("button", name="Change the role of alice").click()
    expect(page.get_by_text("A project needs at least one maintainer")).to_be_visible()

    row = page.locator("tr", has=page.get_by_role("rowheader", name="mallory"))
    row.get_by_role("button", name="Remove mallory").click()
    expect(page.get_by_text("mallory was removed from Demo.")).to_be_visible()
    expect(page.get_by_role("rowheader", name="mallory")).to_have_count(0)


def test_an_api_token_is_shown_once_works_and_can_be_revoked(pages, personas, live_server,
                                                            shot):
    page = pages.logged_in("bob")
    page.get_by_role("link", name="Account of bob").click()
    page.get_by_label("Name").fill("CI deploy job")
    page.get_by_label("Expires after").select_option("30")
    page.get_by_role("button", name="Create token").click()
    token = page.get_by_label("Your new API token").input_value()
    assert token.startswith("sy_")
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    shot(page, "account-token")

    api = f"{live_server.url}/api/projects"
    assert httpx.get(api, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    page.goto("/account/")
    assert token not in page.content()  # shown once
    row = page.locator("tr", has=page.get_by_role("rowheader", name="CI deploy job"))
    expect(row).to_contain_text("Active")
    row.get_by_role("button", name=re.compile("^Revoke")).click()
    assert page.dialogs[-1].startswith("Revoke the token “CI deploy job”?")
    expect(row).to_contain_text("Revoked")
    assert httpx.get(api, headers={"Authorization": f"Bearer {token}"}).status_code == 401


# --- contrast ------------------------------------------------------------------------------------

# WCAG 2 contrast of every element's own text against the background it is drawn on (the
# nearest ancestor with an opaque background colour): 4.5:1, or 3:1 for large text. Disabled
# controls and decoration hidden from assistive technology are exempt, as WCAG exempts them.
CONTRAST_JS = """
() => {
  function rgb(text) {
    const m = text.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(',').map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  }
  function lum(c) {
    const f = v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  }
  function background(el) {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c && c.a >= 0.99) return c;
    }
    return {r: 255, g: 255, b: 255, a: 1};
  }
  const failures = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('svg') || el.closest('[disabled]') || el.disabled ||
        el.closest('[aria-hidden="true"]')) continue;  // decoration is exempt too
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (style.visibility === 'hidden' || style.display === 'none' || box.width < 2 ||
        box.height < 2) continue;
    const fg = rgb(style.color), bg = background(el);
    const a = fg.a;  // blend a translucent text colour onto its background
    const mixed = {r: fg.r * a + bg.r * (1 - a), g: fg.g * a + bg.g * (1 - a),
                   b: fg.b * a + bg.b * (1 - a)};
    const l1 = lum(mixed), l2 = lum(bg);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const large = size >= 24 || (bold && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) {
      const text = el.textContent.trim().slice(0, 40);
      failures.push(`${el.tagName.toLowerCase()}.${el.className} "${text}" ${ratio.toFixed(2)}`);
    }
  }
  return failures;
}
"""


def test_text_has_enough_contrast_on_every_page(pages, tasks, personas):
    old = history(tasks, personas["alice"], count=12)
    failed = next(r for r in old if Run.objects.get(pk=r.pk).status == RunStatus.FAILED)
    run = launch(tasks["greet"], personas["bob"], name="Ada")
    pipeline = launch(tasks["deploy"], personas["bob"])
    page = pages.logged_in("alice")
    page.goto("/p/demo/tasks/greet/launch")
    page.get_by_role("button", name="Launch run").click()  # with errors on the form
    expect(page.locator("#form-error")).to_be_visible()
    failures = {"/p/demo/tasks/greet/launch (errors)": page.evaluate(CONTRAST_JS)}
    for path in ("/", "/runs/", "/runs/?from=nope", "/p/demo/", f"/runs/{run.pk}/",
                 f"/runs/{failed.pk}/", f"/runs/{pipeline.pk}/", "/p/demo/members/",
                 "/account/", "/runs/999999/"):
        page.goto(path)
        failures[path] = page.evaluate(CONTRAST_JS)
    assert not any(failures.values()), {p: f for p, f in failures.items() if f}
