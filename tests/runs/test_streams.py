"""The SSE streams (runs.streams) against a real uvicorn on 127.0.0.1: live delivery, resuming
with Last-Event-ID exactly once, logs, errors before the stream starts, keep-alives and the time
limit, many concurrent streams sharing a few database connections and holding no thread each,
and the static files that the same ASGI server serves."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from django.utils.module_loading import import_string

from jobs.logwriter import LogWriter
from runs.models import Attempt, Execution, Run
from runs.services import run_launch
from runs.streams import run_events_poll
from runs.transitions import (
    Actor,
    event_append,
    execution_claim,
    execution_finish,
    execution_queue,
)
from tests.conftest import subprocess_env, wait_for

ROOT = Path(django_settings.BASE_DIR)
PY = sys.executable
POOL_THREADS = 4  # SWITCHYARD_STREAM_DB_THREADS of the servers below
live = pytest.mark.django_db(transaction=True)


# --- a real server ----------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    pid: int
    log: Path
    name: str  # its PostgreSQL application_name

    def log_count(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text)


@contextlib.contextmanager
def uvicorn_server(directory: Path, **overrides: Any) -> Iterator[Server]:
    """uvicorn serving config.asgi on a free port, on this test session's database. `overrides`
    become settings, through a settings module that extends config.settings."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"stream-test-{directory.name}"
    module = directory / "stream_test_settings.py"
    module.write_text(
        "from config.settings import *  # noqa: F403\n"
        + "".join(f"{key} = {value!r}\n" for key, value in
                  {"SWITCHYARD_STREAM_DB_THREADS": POOL_THREADS, **overrides}.items())
        + "if DATABASES['default']['ENGINE'].endswith('postgresql'):  # noqa: F405\n"
        + f"    DATABASES['default'].setdefault('OPTIONS', {{}})['application_name'] = {name!r}"
        + "  # noqa: F405\n"
    )
    env = subprocess_env(DJANGO_SETTINGS_MODULE="stream_test_settings", LOG_LEVEL="DEBUG",
                         PYTHONPATH=os.pathsep.join([str(directory), str(ROOT)]))
    log_path = directory / "uvicorn.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(  # noqa: S603
            [PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
             "--port", "0", "--no-access-log", "--timeout-graceful-shutdown", "5"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )

    def started() -> re.Match | None:
        if proc.poll() is not None:
            pytest.fail(f"uvicorn exited with {proc.returncode}:\n{log_path.read_text()}")
        return re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log_path.read_text())

    try:
        port = wait_for(started, timeout=60, message="uvicorn to start").group(1)
        yield Server(url=f"http://127.0.0.1:{port}", pid=proc.pid, log=log_path, name=name)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory) -> Iterator[Server]:
    with uvicorn_server(tmp_path_factory.mktemp("uvicorn"),
                        SWITCHYARD_STREAM_POLL_SECONDS=0.1) as running:
        yield running


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    # No keep-alive pool: leaving a stream closes its TCP connection, so the server sees the
    # client go, as it would with a browser tab closing.
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(30.0),
                      limits=httpx.Limits(max_connections=100,
                                          max_keepalive_connections=0)) as client:
        yield client


# --- reading SSE ------------------------------------------------------------------------------


@dataclass
class Sse:
    """One block of an event stream: a message, a `retry:` hint or a comment line."""

    id: int | None = None
    event: str | None = None
    data: Any = None
    retry: int | None = None
    comment: str | None = None


def sse_items(response: httpx.Response) -> Iterator[Sse]:
    """Blocks of an SSE response as they arrive; each read waits for the server (bounded by the
    client's read timeout), so reading the next message is how a test waits for it."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield Sse(comment=line[1:].strip())
            continue
        if line:
            name, _, value = line.partition(":")
            assert name not in fields, f"field {name} repeated in one message: {line!r}"
            fields[name] = value.removeprefix(" ")
            continue
        if fields:
            yield Sse(id=int(fields["id"]) if "id" in fields else None,
                      event=fields.get("event"),
                      data=json.loads(fields["data"]) if "data" in fields else None,
                      retry=int(fields["retry"]) if "retry" in fields else None)
        fields = {}
    assert not fields, f"the stream ended inside a message: {fields}"


def next_message(items: Iterator[Sse]) -> Sse:
    return next(item for item in items if item.event is not None)


def read_until_end(items: Iterator[Sse]) -> list[Sse]:
    """Messages up to and including `end`; the stream must close right after it."""
    messages = []
    for item in items:
        if item.event is not None:
            messages.append(item)
            if item.event == "end":
                break
    assert list(items) == [], "nothing may follow the end message"
    return messages


# --- producing events and logs ----------------------------------------------------------------


@dataclass
class Live:
    run: Run
    execution: Execution
    attempt: Attempt


def start_run(task) -> Live:
    """Launch a run and claim its execution: events 1-4 are queued, queued, started, running."""
    run, _ = run_launch(task=task, raw_params={"name": "sse"}, actor=Actor(via="api", label="t"))
    execution = run.executions.get()
    if execution.status == "pending":  # the on-commit dispatch has usually queued it already
        assert execution_queue(execution_id=execution.pk)
    attempt = execution_claim(execution_id=execution.pk, worker="stream-test")
    assert attempt is not None
    return Live(run=run, execution=execution, attempt=attempt)


def finish(live_run: Live, status: str = "succeeded") -> None:
    assert execution_finish(execution_id=live_run.execution.pk,
                            attempt_number=live_run.attempt.number, status=status,
                            exit_code=0 if status == "succeeded" else 1)


def tick(run: Run, count: int = 1) -> None:
    for i in range(count):
        with transaction.atomic():
            event_append(run.pk, "test.tick", f"tick {i}", now=timezone.now(),
                         data={"i": i})


def log_lines(live_run: Live, *lines: str) -> None:
    """Store each line as its own chunk through the worker's log writer."""
    writer = LogWriter(execution_id=live_run.execution.pk, attempt=live_run.attempt.number)
    for line in lines:
        writer.add("stdout", line)
        writer.flush()
    assert writer.close() == ""


def last_seq(run: Run) -> int:
    return Run.objects.get(pk=run.pk).last_event_seq


# --- live delivery ----------------------------------------------------------------------------


@live
def test_it_streams_events_live_and_ends_with_the_run_status(http, api_for, hello_task):
    bob = api_for("bob").headers
    live_run = start_run(hello_task)
    with http.stream("GET", f"/api/runs/{live_run.run.pk}/events/stream",
                     headers=bob) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        items = sse_items(response)
        assert next(items).retry == 3000
        kinds = [next_message(items).event for _ in range(4)]
        assert kinds == ["run.queued", "execution.queued", "execution.started", "run.running"]

        tick(live_run.run)
        message = next_message(items)
        assert (message.id, message.event, message.data["message"]) == (5, "test.tick", "tick 0")
        assert message.data["seq"] == 5
        assert message.data["data"] == {"i": 0}

        finish(live_run)
        rest = read_until_end(items)
    assert [m.event for m in rest] == ["execution.succeeded", "run.succeeded", "end"]
    assert [m.id for m in rest] == [6, 7, None]
    assert rest[-1].data == {"run_id": live_run.run.pk, "status": "succeeded", "last_seq": 7}


@live
def test_a_message_carries_the_event_as_the_json_endpoint_returns_it(http, api_for,
                                                                     hello_task):
    bob = api_for("bob")
    live_run = start_run(hello_task)
    tick(live_run.run)
    finish(live_run, "failed")
    with http.stream("GET", f"/api/runs/{live_run.run.pk}/events/stream",
                     headers=bob.headers) as response:
        messages = read_until_end(sse_items(response))
    page = bob.get(f"/api/runs/{live_run.run.pk}/events").json()
    assert [m.data for m in messages[:-1]] == page["items"]
    assert [m.event for m in messages[:-1]] == [item["kind"] for item in page["items"]]
    assert messages[-1].data["status"] == "failed"


@live
def test_a_session_login_can_follow_the_stream(http, personas, hello_task):
    browser = Client()
    browser.force_login(personas["carol"])  # a viewer
    live_run = start_run(hello_task)
    finish(live_run)
    with http.stream("GET", f"/api/runs/{live_run.run.pk}/events/stream",
                     cookies={"sessionid": browser.cookies["sessionid"].value}) as response:
        assert response.status_code == 200
        assert read_until_end(sse_items(response))[-1].data["status"] == "succeeded"


# --- resuming ---------------------------------------------------------------------------------


class Producer(threading.Thread):
    """Appends events, one transaction each, while the client reads and hangs up."""

    def __init__(self, live_run: Live, count: int) -> None:
        super().__init__(daemon=True)
        self.live_run, self.count = live_run, count
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            tick(self.live_run.run, self.count)
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            self.error = exc
        finally:
            connection.close()


@live
def test_reconnecting_with_last_event_id_receives_every_event_exactly_once(http, server,
                                                                           api_for,
                                                                           hello_task):
    bob = api_for("bob").headers
    live_run = start_run(hello_task)
    url = f"/api/runs/{live_run.run.pk}/events/stream"
    producer = Producer(live_run, count=120)
    producer.start()
    received: list[int] = []
    ended = None
    closed_before = server.log_count(f"stream run {live_run.run.pk} events closed")
    disconnects = 0
    while ended is None:
        # The header wins over ?after=, as EventSource resends the original URL on reconnect.
        headers = {**bob, "Last-Event-ID": str(received[-1])} if received else bob
        with http.stream("GET", f"{url}?after=0", headers=headers) as response:
            assert response.status_code == 200
            items = sse_items(response)
            for _ in range(17):  # then hang up mid-run, wherever the producer is
                message = next_message(items)
                if message.event == "end":
                    ended = message
                    break
                received.append(message.id)
                if producer.error is not None:
                    raise producer.error
                if len(received) == 4 + producer.count:  # every tick is in: end the run
                    producer.join()
                    finish(live_run)
            else:
                disconnects += 1
    assert disconnects >= 5
    total = last_seq(live_run.run)
    assert received == list(range(1, total + 1))  # in order, no gap, no duplicate
    assert ended.data == {"run_id": live_run.run.pk, "status": "succeeded", "last_seq": total}
    # The server noticed every hang-up and finished each generator.
    wait_for(lambda: server.log_count(f"stream run {live_run.run.pk} events closed")
             >= closed_before + disconnects + 1, message="the server to close every stream")


@live
def test_reconnecting_after_the_end_gets_only_the_end(http, api_for, hello_task):
    live_run = start_run(hello_task)
    finish(live_run)
    headers = {**api_for("bob").headers, "Last-Event-ID": "6"}
    with http.stream("GET", f"/api/runs/{live_run.run.pk}/events/stream",
                     headers=headers) as response:
        messages = read_until_end(sse_items(response))
    assert [(m.id, m.event) for m in messages] == [(None, "end")]


# --- logs -------------------------------------------------------------------------------------


@live
def test_logs_stream_live_resume_and_end_with_the_execution(http, api_for, hello_task):
    bob = api_for("bob").headers
    live_run = start_run(hello_task)
    url = f"/api/executions/{live_run.execution.pk}/logs/stream"
    log_lines(live_run, "one", "two")
    with http.stream("GET", url, headers=bob) as response:
        assert response.headers["content-type"] == "text/event-stream"
        items = sse_items(response)
        first = [next_message(items) for _ in range(2)]
        log_lines(live_run, "three")
        first.append(next_message(items))
    assert [(m.id, m.event, m.data["text"]) for m in first] == [
        (1, "log", "one"), (2, "log", "two"), (3, "log", "three")]
    assert first[0].data["stream"] == "stdout"
    assert first[0].data["attempt"] == 1

    log_lines(live_run, "four", "five")  # while nobody listens
    with http.stream("GET", url, headers={**bob, "Last-Event-ID": "3"}) as response:
        items = sse_items(response)
        assert next_message(items).data["text"] == "four"
        finish(live_run)
        rest = read_until_end(items)
    assert [(m.id, m.event) for m in rest] == [(5, "log"), (None, "end")]
    assert rest[-1].data == {"execution_id": live_run.execution.pk, "status": "succeeded",
                             "last_seq": 5}


# --- errors before the stream -----------------------------------------------------------------


def error_of(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["error"]


@live
def test_without_credentials_it_is_401(http, hello_task):
    live_run = start_run(hello_task)
    for url in (f"/api/runs/{live_run.run.pk}/events/stream",
                f"/api/executions/{live_run.execution.pk}/logs/stream"):
        response = http.get(url, headers={"Authorization": "Bearer sy_not-a-token"})
        assert response.status_code == 401
        assert error_of(response)["code"] == "unauthenticated"
        assert http.get(url).status_code == 401


@live
def test_outsiders_and_unknown_ids_are_404(http, api_for, hello_task):
    live_run = start_run(hello_task)
    mallory, bob = api_for("mallory").headers, api_for("bob").headers
    for url, headers in [
        (f"/api/runs/{live_run.run.pk}/events/stream", mallory),
        (f"/api/executions/{live_run.execution.pk}/logs/stream", mallory),
        (f"/api/runs/{live_run.run.pk + 1000}/events/stream", bob),
        (f"/api/executions/{live_run.execution.pk + 1000}/logs/stream", bob),
        ("/api/runs/99999999999999999999/events/stream", bob),
    ]:
        response = http.get(url, headers=headers)
        assert response.status_code == 404, url
        assert error_of(response)["code"] == "not_found"


@live
@pytest.mark.parametrize(("query", "last_event_id"), [
    ("", "abc"), ("", "-1"), ("", "1.5"), ("", "٣"), ("", "99999999999"), ("", "5"),
    ("?after=x", None), ("?after=5", None), ("?after=0", "5"),
])
def test_a_bad_cursor_is_400_before_streaming(http, api_for, hello_task, query, last_event_id):
    live_run = start_run(hello_task)  # 4 events, so 5 is past the end
    headers = dict(api_for("bob").headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id.encode()  # bytes: "٣" is not ASCII
    response = http.get(f"/api/runs/{live_run.run.pk}/events/stream{query}", headers=headers)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "bad_request"
    assert "Last-Event-ID" in error["message"] if last_event_id else "after" in error["message"]


@live
def test_a_log_cursor_past_the_last_chunk_is_400(http, api_for, hello_task):
    live_run = start_run(hello_task)
    response = http.get(f"/api/executions/{live_run.execution.pk}/logs/stream",
                        headers={**api_for("bob").headers, "Last-Event-ID": "3"})
    assert response.status_code == 400
    assert "has only reached seq 0" in error_of(response)["message"]


# --- keep-alive, the time limit, concurrency --------------------------------------------------


@live
def test_a_quiet_stream_gets_keep_alives_then_ends_at_its_time_limit(api_for, hello_task,
                                                                    tmp_path):
    live_run = start_run(hello_task)
    bob = api_for("bob").headers
    with uvicorn_server(tmp_path / "short", SWITCHYARD_STREAM_KEEPALIVE_SECONDS=0.05,
                        SWITCHYARD_STREAM_MAX_SECONDS=2.0,
                        SWITCHYARD_STREAM_RETRY_MS=500) as short, \
            httpx.Client(base_url=short.url, timeout=30.0) as client:
        url = f"/api/runs/{live_run.run.pk}/events/stream"
        with client.stream("GET", url, headers=bob) as response:
            items = list(sse_items(response))  # the run never ends: the time limit closes it
        assert items[0].retry == 500
        assert [m.id for m in items if m.event] == [1, 2, 3, 4]
        comments = [m.comment for m in items if m.comment]
        assert "keep-alive" in comments
        assert comments[-1] == "stream time limit reached; reconnect with Last-Event-ID"
        assert not any(m.event == "end" for m in items)

        tick(live_run.run)
        finish(live_run)
        with client.stream("GET", url, headers={**bob, "Last-Event-ID": "4"}) as response:
            rest = read_until_end(sse_items(response))
        assert [m.id for m in rest] == [5, 6, 7, None]


def database_connections(server: Server) -> int:
    """Open connections from the server process to this test session's database."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                           [server.name])
            return cursor.fetchone()[0]
    name = os.path.realpath(connection.settings_dict["NAME"])
    fds = Path(f"/proc/{server.pid}/fd")
    return sum(1 for fd in fds.iterdir()
               if os.path.realpath(fd) == name)  # one file handle per SQLite connection


@live
def test_fifty_concurrent_streams_share_a_few_database_connections(api_for, hello_task,
                                                                   tmp_path):
    streams = 50
    live_run = start_run(hello_task)
    bob = api_for("bob").headers
    with uvicorn_server(tmp_path / "many") as fresh, \
            httpx.Client(base_url=fresh.url, timeout=30.0,
                         limits=httpx.Limits(max_connections=streams + 10)) as client, \
            contextlib.ExitStack() as open_streams:
        readers = []
        for _ in range(streams):
            response = open_streams.enter_context(
                client.stream("GET", f"/api/runs/{live_run.run.pk}/events/stream",
                              headers=bob))
            assert response.status_code == 200
            items = sse_items(response)
            assert next_message(items).id == 1
            readers.append(items)
        # All fifty are open at once, each polling, yet the server holds no more database
        # connections than its stream pool has threads. Waited for, because a closed
        # connection can linger a moment: PostgreSQL ends its backend asynchronously, and
        # SQLite defers closing a file while another connection of the process holds a lock.
        wait_for(lambda: database_connections(fresh) <= POOL_THREADS, timeout=10,
                 message=f"at most {POOL_THREADS} database connections")
        tick(live_run.run)
        for items in readers:  # every stream is live: each one gets the new event
            assert [next_message(items).id for _ in range(4)] == [2, 3, 4, 5]
        open_streams.close()
        wait_for(lambda: fresh.log_count(f"stream run {live_run.run.pk} events closed")
                 >= streams, message="the server to close every stream")


def server_threads(server: Server) -> int:
    """The server process's thread count, as the kernel reports it."""
    status = Path(f"/proc/{server.pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)$", status, re.MULTILINE).group(1))


@live
def test_an_open_stream_holds_no_thread(api_for, hello_task, tmp_path):
    streams = 40
    live_run = start_run(hello_task)
    bob = api_for("bob").headers
    with uvicorn_server(tmp_path / "threads") as fresh, \
            httpx.Client(base_url=fresh.url, timeout=30.0,
                         limits=httpx.Limits(max_connections=streams + 10)) as client, \
            contextlib.ExitStack() as open_streams:
        # One whole stream first, so that the threads a process starts once (its first stream
        # pool thread, the event loop's default executor) are counted in the baseline.
        ended = start_run(hello_task)
        finish(ended)
        with client.stream("GET", f"/api/runs/{ended.run.pk}/events/stream",
                           headers=bob) as response:
            read_until_end(sse_items(response))
        wait_for(lambda: fresh.log_count(f"stream run {ended.run.pk} events closed"),
                 message="the first stream to close")
        before = server_threads(fresh)
        readers = []
        for _ in range(streams):
            response = open_streams.enter_context(
                client.stream("GET", f"/api/runs/{live_run.run.pk}/events/stream",
                              headers=bob))
            assert response.status_code == 200
            items = sse_items(response)
            assert next_message(items).id == 1  # served, and now waiting for more
            readers.append(items)  # kept: a dropped iterator would close its stream
        # The stream pool may grow to its size; nothing may grow with the number of clients.
        # Waited for, because a stream's request thread, once retired, ends on its own time.
        allowance = POOL_THREADS + 2
        wait_for(lambda: server_threads(fresh) - before <= allowance, timeout=10,
                 message=f"at most {before} + {allowance} server threads with {streams} "
                 "streams open")
        tick(live_run.run)
        for items in readers:  # and every stream is still live
            assert [next_message(items).id for _ in range(4)] == [2, 3, 4, 5]
        open_streams.close()
        wait_for(lambda: fresh.log_count(f"stream run {live_run.run.pk} events closed")
                 >= streams, message="the server to close every stream")


def test_every_middleware_is_async_capable():
    # A sync-only one would make Django's ASGI handler hop to a thread and back around it on
    # every request (config/middleware.py has both modes of the static files one).
    sync_only = [path for path in django_settings.MIDDLEWARE
                 if not getattr(import_string(path), "async_capable", False)]
    assert sync_only == []


def test_the_asgi_server_serves_static_files(http):
    # Under uvicorn the static files middleware runs as ServeStatic, async, and serves the
    # vendored htmx itself, with validators and a cache lifetime.
    response = http.get("/static/vendor/htmx.min.js")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/javascript")
    assert int(response.headers["Content-Length"]) == len(response.content) > 0
    assert response.headers["Cache-Control"].startswith("max-age=")
    again = http.get("/static/vendor/htmx.min.js",
                     headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


# --- in-process: WSGI fallback, schema, queries -----------------------------------------------


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous")
def test_under_wsgi_a_stream_sends_what_there_is_and_closes(api_for, hello_task):
    run, _ = run_launch(task=hello_task, raw_params={"name": "x"},
                        actor=Actor(via="api", label="t"))
    response = api_for("carol").get(f"/api/runs/{run.pk}/events/stream")
    assert response.status_code == 200
    body = b"".join(response).decode()
    assert body.startswith("retry: 3000\n\nid: 1\nevent: run.queued\ndata: {")
    assert "event: end" not in body  # not ended: the client reconnects after `retry`


def test_the_openapi_document_declares_the_streams(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    for path, operation_id in [("/api/runs/{run_id}/events/stream", "runs_events_stream"),
                               ("/api/executions/{execution_id}/logs/stream",
                                "executions_logs_stream")]:
        operation = paths[path]["get"]
        assert operation["operationId"] == operation_id
        assert set(operation["responses"]) == {"200", "400", "401", "404"}
        assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]
        assert "application/json" in operation["responses"]["400"]["content"]
        headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert headers == ["Last-Event-ID"]


def test_a_poll_is_two_queries(django_assert_num_queries, hello_task):
    run, _ = run_launch(task=hello_task, raw_params={"name": "x"},
                        actor=Actor(via="api", label="t"))
    tick(run, 3)  # after run.queued: no on-commit dispatch inside the test's transaction
    with django_assert_num_queries(2):
        batch = run_events_poll(run.pk, 1)
    assert [seq for seq, _message in batch.messages] == [2, 3, 4]
    assert (batch.terminal, batch.last_seq) == (False, 4)
