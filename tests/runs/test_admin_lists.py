"""The back office's lists on big tables: the queries each changelist makes are pinned and the
same for N rows and 3N rows (no query per row), counting stops at a cap, the filters on text
columns do not read the whole table, and the lists open newest first."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from artifacts.models import Artifact, Comparison
from hooks.models import WebhookDelivery, WebhookEndpoint
from runs.admin_lists import BoundedCountPaginator
from runs.models import (
    ApiToken,
    Attempt,
    AuditLog,
    Event,
    Execution,
    LogChunk,
    Membership,
    Project,
    Run,
    Task,
)
from tests.admin_pages import queries_for, staff_client
from tests.factories import ProjectFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db

_serial = itertools.count(1)


def _runs(task: Task, n: int) -> list[Run]:
    users = [UserFactory(), UserFactory(), None]
    statuses = ["queued", "running", "succeeded", "failed"]
    return Run.objects.bulk_create([
        Run(project_id=task.project_id, task=task, task_snapshot=task.snapshot(),
            params={"name": "x"}, status=statuses[i % 4], created_by=users[i % 3],
            trigger="api" if i % 2 else "ui")
        for i in range(n)])


def _executions(task: Task, n: int) -> list[Execution]:
    return Execution.objects.bulk_create([
        Execution(run=run, name=task.slug, status="running", attempt=1, worker=f"w:{run.pk}",
                  concurrency_key=f"site:{run.pk % 2}", definition={"big": "x" * 100})
        for run in _runs(task, n)])


def _attempts(task: Task, n: int) -> list[Attempt]:
    now = timezone.now()
    return Attempt.objects.bulk_create([
        Attempt(execution=e, number=1, worker=e.worker, started_at=now, outcome="failure")
        for e in _executions(task, n)])


def _events(task: Task, n: int) -> list[Event]:
    now = timezone.now()
    return Event.objects.bulk_create([
        Event(run=run, seq=1, kind=["run.queued", "run.started"][i % 2], message="queued",
              actor="alice", created_at=now)
        for i, run in enumerate(_runs(task, n))])


def _log_chunks(task: Task, n: int) -> list[LogChunk]:
    now = timezone.now()
    return LogChunk.objects.bulk_create([
        LogChunk(execution=e, attempt=1, seq=1, stream="stdout", text="line\n" * 50,
                 line_count=50, created_at=now)
        for e in _executions(task, n)])


def _audit_rows(task: Task, n: int) -> list[AuditLog]:
    user = UserFactory()
    now = timezone.now()
    return AuditLog.objects.bulk_create([
        AuditLog(created_at=now, actor=user, actor_label=user.username,
                 via=["ui", "api", "admin"][i % 3], action=["run.launch", "run.cancel"][i % 2],
                 project_id=task.project_id, object_type="run", object_id=str(next(_serial)),
                 changes={"a": 1}, ip_address="127.0.0.1")
        for i in range(n)])


def _tasks(task: Task, n: int) -> list[Task]:
    projects = [task.project, ProjectFactory()]
    return [TaskFactory(project=projects[i % 2]) for i in range(n)]


def _projects(task: Task, n: int) -> list[Project]:
    return [ProjectFactory() for _ in range(n)]


def _memberships(task: Task, n: int) -> list[Membership]:
    return [Membership.objects.create(project=task.project, user=UserFactory())
            for _ in range(n)]


def _tokens(task: Task, n: int) -> list[ApiToken]:
    from runs.services import api_token_create

    return [api_token_create(user=UserFactory(), name=f"t{i}")[0] for i in range(n)]


def _endpoint(task: Task) -> WebhookEndpoint:
    now = timezone.now()
    return WebhookEndpoint.objects.create(project_id=task.project_id, url="http://127.0.0.1:9/",
                                          secret_encrypted="x", created_at=now, updated_at=now)


def _endpoints(task: Task, n: int) -> list[WebhookEndpoint]:
    return [_endpoint(task) for _ in range(n)]


def _deliveries(task: Task, n: int) -> list[WebhookDelivery]:
    endpoint = _endpoint(task)
    now = timezone.now()
    return WebhookDelivery.objects.bulk_create([
        WebhookDelivery(endpoint=endpoint, event_type=["run.succeeded", "run.failed"][i % 2],
                        event_id=f"msg_{next(_serial)}", payload={"big": "x" * 100}, run=run,
                        status="failed", attempts=3, created_at=now)
        for i, run in enumerate(_runs(task, n))])


def _artifacts(task: Task, n: int) -> list[Artifact]:
    now = timezone.now()
    return Artifact.objects.bulk_create([
        Artifact(run_id=e.run_id, execution=e, attempt=1, name="shot.png", size=5,
                 sha256="0" * 64, content_type="image/png", storage_key=f"k/{next(_serial)}",
                 created_at=now)
        for e in _executions(task, n)])


def _comparisons(task: Task, n: int) -> list[Comparison]:
    now = timezone.now()
    baseline = _runs(task, 1)[0]
    return Comparison.objects.bulk_create([
        Comparison(artifact=a, baseline_run=baseline, ratio=0.5, level="major", created_at=now)
        for a in _artifacts(task, n)])


# changelist -> (rows builder, queries pinned). The pins change only when a list's page does
# something new; a count that grows with the rows is a query per row (an N+1).
LISTS: dict[str, tuple[Callable[[Task, int], list], int]] = {
    "/admin/runs/run/": (_runs, 8),
    "/admin/runs/execution/": (_executions, 5),
    "/admin/runs/attempt/": (_attempts, 5),
    "/admin/runs/event/": (_events, 5),
    "/admin/runs/logchunk/": (_log_chunks, 4),
    "/admin/runs/auditlog/": (_audit_rows, 9),
    "/admin/runs/task/": (_tasks, 8),
    "/admin/runs/project/": (_projects, 7),
    "/admin/runs/membership/": (_memberships, 8),
    "/admin/runs/apitoken/": (_tokens, 7),
    "/admin/hooks/webhookendpoint/": (_endpoints, 8),
    "/admin/hooks/webhookdelivery/": (_deliveries, 6),
    "/admin/artifacts/artifact/": (_artifacts, 5),
    "/admin/artifacts/comparison/": (_comparisons, 4),
}


@pytest.mark.parametrize("url", list(LISTS))
def test_a_changelist_costs_the_same_queries_for_n_and_3n_rows(url, hello_task):
    build, pinned = LISTS[url]
    client = staff_client()
    build(hello_task, 4)
    with_n = queries_for(client, url)
    build(hello_task, 8)
    with_3n = queries_for(client, url)
    assert (url, with_n, with_3n) == (url, pinned, pinned)


FILTERED = [
    "/admin/runs/run/?status__exact=failed&trigger__exact=api&q=hello",
    "/admin/runs/run/?visual_diff=-&o=-3",
    "/admin/runs/execution/?status__exact=running&stage=",
    "/admin/runs/event/?kind=run.queued",
    "/admin/runs/event/?q=not-a-number",
    "/admin/runs/execution/?q=not-a-number",
    "/admin/hooks/webhookdelivery/?q=not-a-number&status__exact=failed",
    "/admin/artifacts/artifact/?q=not-a-number",
    "/admin/runs/auditlog/?via=api&action=run.launch&object_type=run",
]


@pytest.mark.parametrize("url", FILTERED)
def test_filtered_and_searched_lists_cost_no_query_per_row(url, hello_task):
    client = staff_client()
    builders = (_executions, _events, _audit_rows, _deliveries, _artifacts)
    for build in builders:
        build(hello_task, 4)
    with_n = queries_for(client, url)
    for build in builders:
        build(hello_task, 8)
    assert queries_for(client, url) == with_n


def test_counting_stops_at_the_cap(hello_task, monkeypatch):
    monkeypatch.setattr(BoundedCountPaginator, "count_cap", 5)
    client = staff_client()
    _runs(hello_task, 8)
    page = client.get("/admin/runs/run/").content.decode()
    assert "more than 5 runs" in page
    # No "select all N" across pages: N is not known, and each run is one transition.
    assert 'class="question hidden"' not in page
    assert "filter the list to act on more at once" in page
    with CaptureQueriesContext(connection) as captured:
        client.get("/admin/runs/run/?status__exact=failed")
    [count] = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"]]
    assert "LIMIT 6" in count


def test_below_the_cap_the_count_is_exact(hello_task):
    client = staff_client()
    _runs(hello_task, 3)
    page = client.get("/admin/runs/run/").content.decode()
    assert "3 runs" in page and "more than" not in page


def test_pages_end_at_the_cap(hello_task):
    _runs(hello_task, 8)
    paginator = BoundedCountPaginator(Run.objects.order_by("-id"), 2)
    paginator.count_cap = 5
    assert (paginator.count, paginator.count_is_exact, paginator.num_pages) == (6, False, 3)
    assert len(paginator.page(3).object_list) == 1  # the 5th run, not a 6th
    exact = BoundedCountPaginator(Run.objects.order_by("-id"), 5)
    assert (exact.count, exact.count_is_exact, exact.num_pages) == (8, True, 2)


@pytest.mark.parametrize("url,build", [
    ("/admin/runs/execution/", _executions), ("/admin/runs/attempt/", _attempts),
    ("/admin/runs/event/", _events), ("/admin/runs/logchunk/", _log_chunks),
    ("/admin/artifacts/artifact/", _artifacts),
])
def test_history_lists_open_newest_first(url, build, hello_task):
    rows = build(hello_task, 3)
    page = staff_client().get(url).content.decode()
    newest, oldest = max(r.pk for r in rows), min(r.pk for r in rows)
    assert page.index(f'{url}{newest}/change/') < page.index(f'{url}{oldest}/change/')


def test_text_filters_offer_values_of_the_newest_rows_only(hello_task, monkeypatch):
    from runs.admin_lists import RecentValuesFilter

    monkeypatch.setattr(RecentValuesFilter, "window", 4)
    run = _runs(hello_task, 1)[0]
    now = timezone.now()
    Event.objects.bulk_create([Event(run=run, seq=i, kind="run.ancient" if i == 1 else
                                     "run.recent", message="m", created_at=now)
                               for i in range(1, 7)])
    client = staff_client()
    page = client.get("/admin/runs/event/").content.decode()
    assert "?kind=run.recent" in page and "?kind=run.ancient" not in page
    # Choosing an older value by its link still filters the whole table, and lists it.
    page = client.get("/admin/runs/event/?kind=run.ancient").content.decode()
    assert "?kind=run.ancient" in page and "1 event" in page
