"""Server-sent event streams (`text/event-stream`) of a run's timeline and an execution's log.

    GET /api/runs/{id}/events/stream        one message per Event, `event:` its kind
    GET /api/executions/{id}/logs/stream    one message per LogChunk, `event: log`

Every message is `id: <seq>`, `event: ...` and `data: <one-line JSON of the item, exactly as the
JSON endpoints return it>`. A stream starts after `?after=<seq>` or the `Last-Event-ID` header
(the header wins: EventSource sends it when it reconnects to the same URL), sends every item with
a greater seq exactly once and in order, and ends with an `event: end` message once the run (the
execution) is terminal and its last seq has been sent. Reading `seq > cursor` in order never
skips anything: event seqs are allocated under the run's row lock and log seqs by the one current
attempt, so a later seq never becomes visible before an earlier one.

Serving. The views are `async def` and the body is an async generator, so under the ASGI server
(uvicorn, see the Procfile) an open stream is a coroutine waiting in `asyncio.sleep` and holds no
thread: no worker thread serves it and no pool limits how many there are. Every middleware is
async-capable, so the request never passes a sync link; the one thread asgiref gives the request
for its sync work (authentication, the visibility check) would otherwise idle until the stream
ends, so it is retired, its connections closed, as soon as the stream starts. Measured by
test_an_open_stream_holds_no_thread, 40 open streams: the server's threads go from 4 to 4 (they
went from 3 to 42, one per stream, while the request's thread stayed). The polls run in a small
dedicated thread pool (SWITCHYARD_STREAM_DB_THREADS), so all open streams together use at most
that many threads and database connections, and no stream keeps one for its whole life. Streams
last at most SWITCHYARD_STREAM_MAX_SECONDS; the client then reconnects with `Last-Event-ID` and
loses nothing.

Under WSGI (Django's test Client, `live_server`, a WSGI deployment) a stream cannot wait without
holding a worker thread and would be buffered whole before sending, so it sends what there is
and closes; EventSource reconnects after `retry:` and the stream degrades to polling.

Settings, read on each request (defaults in brackets): SWITCHYARD_STREAM_POLL_SECONDS [0.5],
SWITCHYARD_STREAM_KEEPALIVE_SECONDS [15], SWITCHYARD_STREAM_MAX_SECONDS [3600],
SWITCHYARD_STREAM_RETRY_MS [3000]; SWITCHYARD_STREAM_DB_THREADS [4] is read once per process.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import SyncToAsync, sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import DatabaseError, close_old_connections, connections
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Header, Query, Router, Schema
from ninja.responses import NinjaJSONEncoder

from runs import selectors
from runs.errors import ApplicationError
from runs.models import Execution, Run
from runs.schemas import ErrorOut, EventOut, LogChunkOut

logger = logging.getLogger(__name__)

router = Router(tags=["runs"])

# Event.seq and LogChunk.seq are PositiveIntegerFields; a larger cursor is no seq of ours.
MAX_SEQ = 2**31 - 1
# Items read per poll; a full page is followed by another poll at once, without waiting.
PAGE = 500
MEDIA_TYPE = "text/event-stream"


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


@functools.cache
def _db_executor() -> ThreadPoolExecutor:
    # Shared by every stream of this process: the pool size bounds the database connections
    # that streams hold, however many clients are connected. Created on the event loop thread
    # only, so the cache needs no lock.
    threads = max(1, int(_setting("SWITCHYARD_STREAM_DB_THREADS", 4)))
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sse-db")


# --- message format --------------------------------------------------------------------------


def sse_message(seq: int, event: str, item: Schema) -> str:
    """One SSE message. `json.dumps` escapes every control character (and, with ASCII output,
    U+2028/U+2029), so the data is always one line and cannot break the framing."""
    data = json.dumps(item.model_dump(), cls=NinjaJSONEncoder, separators=(",", ":"))
    name = event.replace("\r", " ").replace("\n", " ")
    return f"id: {seq}\nevent: {name}\ndata: {data}\n\n"


def sse_end(data: dict[str, Any]) -> str:
    # No `id:` line, so the client's Last-Event-ID stays the last item's seq.
    return f"event: end\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def stream_cursor(after: str | None, last_event_id: str | None, *, last_seq: int,
                  what: str) -> int:
    """The seq to start after: the Last-Event-ID header, else ?after=, else 0.

    ApplicationError (400) for anything that is not a seq this stream could have sent, including
    one past the last seq allocated so far (a cursor from another run's or execution's stream
    would otherwise silently skip items)."""
    header = (last_event_id or "").strip()
    query = (after or "").strip()
    if header:
        value, source = header, "The Last-Event-ID header"
    elif query:
        value, source = query, "The after parameter"
    else:
        return 0
    if not (value.isascii() and value.isdigit() and len(value) <= 10 and int(value) <= MAX_SEQ):
        raise ApplicationError(
            f"{source} must be the id (seq) of a message from this stream, a whole number from "
            f"0, got {value[:40]!r}; leave it out to start from the beginning."
        )
    cursor = int(value)
    if cursor > last_seq:
        raise ApplicationError(
            f"{source} is {cursor}, but {what} has only reached seq {last_seq}; send the id of "
            "a message received from this stream, or leave it out to start from the beginning."
        )
    return cursor


# --- polls (sync, run in a thread) ------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One poll: encoded messages by seq, and whether the source has ended at `last_seq`."""

    messages: list[tuple[int, str]]
    terminal: bool
    last_seq: int
    end: dict[str, Any] = field(default_factory=dict)


def run_events_poll(run_id: int, after: int) -> Batch | None:
    """Events of a run after a seq; None when the run no longer exists."""
    run = Run.objects.only("id", "status", "last_event_seq").filter(pk=run_id).first()
    if run is None:
        return None
    # The status is read before the events: if the run had ended by then, every event up to
    # its last_event_seq was committed, and the read below sees them all.
    events = selectors.events_after(run, after, PAGE)
    return Batch(
        messages=[(e.seq, sse_message(e.seq, e.kind, EventOut.from_orm(e))) for e in events],
        terminal=run.is_terminal,
        last_seq=run.last_event_seq,
        end={"run_id": run.pk, "status": run.status, "last_seq": run.last_event_seq},
    )


def execution_logs_poll(execution_id: int, after: int) -> Batch | None:
    """Log chunks of an execution after a seq; None when the execution no longer exists."""
    execution = (
        Execution.objects.only("id", "status", "last_log_seq").filter(pk=execution_id).first()
    )
    if execution is None:
        return None
    # As above: chunks are stored only while the execution is running, so once it is terminal
    # its last_log_seq is final and every chunk up to it is visible.
    chunks = selectors.logs_after(execution, after, PAGE)
    return Batch(
        messages=[(c.seq, sse_message(c.seq, "log", LogChunkOut.from_orm(c))) for c in chunks],
        terminal=execution.is_terminal,
        last_seq=execution.last_log_seq,
        end={"execution_id": execution.pk, "status": execution.status,
             "last_seq": execution.last_log_seq},
    )


def _pooled(poll: Callable[[int], Batch | None]) -> Callable[[int], Batch | None]:
    """The poll with the connection housekeeping Django does at request boundaries: the pool
    threads outlive requests, so CONN_MAX_AGE, health checks and broken connections are handled
    here, before and after each poll."""

    def run(after: int) -> Batch | None:
        close_old_connections()
        try:
            return poll(after)
        finally:
            close_old_connections()

    return run


def _release_request_connections() -> None:
    # Runs on the request's own thread (below), which opened them for the auth and visibility
    # checks: a stream must not keep a connection for up to an hour. Never inside an atomic block
    # (a test's transaction), where closing would break the caller.
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close()


def _retire_request_thread() -> None:
    """End the thread that asgiref keeps for this request's sync work, on the event loop.

    Django's ASGI handler serves each request inside a ThreadSensitiveContext: the request's
    first thread-sensitive `sync_to_async` (the request_started receivers, the API's
    authentication, the visibility check) starts a one-thread executor for it, which asgiref
    shuts down only once the response has been sent, for a stream when it closes. By the time a
    stream starts that thread has nothing left to do, so it is taken out of the context and left
    to end; a later thread-sensitive call of the request (closing the response) gets a fresh one,
    which the context shuts down as usual. These are asgiref internals, the same from 3.8.1
    (Django 5.2's minimum) to 3.13: if they ever move this does nothing, and
    test_an_open_stream_holds_no_thread fails."""
    current = getattr(SyncToAsync, "thread_sensitive_context", None)
    executors = getattr(SyncToAsync, "context_to_thread_executor", None)
    context = current.get(None) if current is not None else None
    if context is None or executors is None:
        return
    executor = executors.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)  # idle: its thread ends at once, nothing waits for it


# --- the stream -------------------------------------------------------------------------------


async def sse_stream(poll: Callable[[int], Batch | None], cursor: int, *, live: bool,
                     label: str) -> AsyncIterator[str]:
    """Messages after `cursor` until the source ends, the client leaves or time runs out.

    `live` is False under WSGI: one poll, then close (see the module docstring)."""
    loop = asyncio.get_running_loop()
    poll_seconds = max(0.01, _setting("SWITCHYARD_STREAM_POLL_SECONDS", 0.5))
    keepalive_seconds = max(0.01, _setting("SWITCHYARD_STREAM_KEEPALIVE_SECONDS", 15))
    deadline = loop.time() + max(0.0, _setting("SWITCHYARD_STREAM_MAX_SECONDS", 3600))
    if live:
        # Here, in the request's context, once the middleware is done with the request: from now
        # on an open stream is a coroutine and nothing else, no thread and no connection.
        await sync_to_async(_release_request_connections)()
        _retire_request_thread()
        read = sync_to_async(_pooled(poll), thread_sensitive=False, executor=_db_executor())
    else:
        # The request's own thread: under the test Client it holds the test's transaction.
        read = sync_to_async(poll)
    sent = 0
    outcome = "closed by the client"
    yield f"retry: {int(_setting('SWITCHYARD_STREAM_RETRY_MS', 3000))}\n\n"
    last_write = loop.time()
    try:
        while True:
            batch = await read(cursor)
            if batch is None:
                outcome = "deleted"  # a reconnect gets the 404
                return
            for seq, message in batch.messages:
                yield message
                cursor = seq
                sent += 1
            if batch.messages:
                last_write = loop.time()
            if batch.terminal and cursor >= batch.last_seq:
                yield sse_end(batch.end)
                outcome = f"ended ({batch.end.get('status')})"
                return
            if not live:
                outcome = "one pass (not served by ASGI)"
                return
            if len(batch.messages) >= PAGE:
                continue  # behind: catch up before waiting
            now = loop.time()
            if now >= deadline:
                # Bounded so that no connection lives forever (and credentials are checked
                # again); the client resumes from its Last-Event-ID.
                yield ": stream time limit reached; reconnect with Last-Event-ID\n\n"
                outcome = "time limit"
                return
            if now - last_write >= keepalive_seconds:
                yield ": keep-alive\n\n"  # proxies cut connections that stay silent
                last_write = now
            await asyncio.sleep(min(poll_seconds, deadline - now,
                                    max(0.0, last_write + keepalive_seconds - now)))
    except asyncio.CancelledError:
        outcome = "client disconnected"
        raise  # let Django finish cancelling the request
    except DatabaseError:
        # Headers are sent, so no error response is possible: end the stream and let the
        # client reconnect with Last-Event-ID once the database is back.
        logger.warning("stream %s: database error, closing it", label, exc_info=True)
        outcome = "database error"
    finally:
        logger.debug("stream %s closed after %d messages: %s", label, sent, outcome)


def sse_response(messages: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(messages, content_type=MEDIA_TYPE)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each message on at once, never buffer
    return response


# --- endpoints --------------------------------------------------------------------------------


def _stream_responses(description: str, example: str) -> dict[str, Any]:
    # django-ninja has no model for a text body; declare the 200 in the OpenAPI document here.
    return {"responses": {200: {
        "description": description,
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}, "example": example}},
    }}}


RESPONSES = {200: None, 400: ErrorOut, 401: ErrorOut, 404: ErrorOut}
AFTER = Query(None, description="Start after this seq (a whole number from 0); ignored when a "
              "Last-Event-ID header is sent.")
LAST_EVENT_ID = Header(None, alias="Last-Event-ID", description="The id of the last message "
                       "received; EventSource sends it when it reconnects. Wins over ?after=.")

EVENTS_EXAMPLE = (
    "retry: 3000\n\n"
    "id: 1\nevent: run.queued\ndata: {\"seq\":1,\"kind\":\"run.queued\",\"message\":\"Run queued "
    "by bob (API).\",\"execution_id\":null,\"data\":{},\"actor\":\"bob\",\"created_at\":"
    "\"2025-01-01T12:00:00.000Z\"}\n\n"
    ": keep-alive\n\n"
    "event: end\ndata: {\"run_id\":41,\"status\":\"succeeded\",\"last_seq\":6}\n\n"
)
LOGS_EXAMPLE = (
    "retry: 3000\n\n"
    "id: 1\nevent: log\ndata: {\"seq\":1,\"attempt\":1,\"stream\":\"stdout\",\"text\":\"hello\","
    "\"line_count\":1,\"created_at\":\"2025-01-01T12:00:00.000Z\"}\n\n"
    "event: end\ndata: {\"execution_id\":7,\"status\":\"succeeded\",\"last_seq\":1}\n\n"
)


@router.get("/runs/{int:run_id}/events/stream", response=RESPONSES,
            operation_id="runs_events_stream",
            openapi_extra=_stream_responses(
                "Server-sent events: one message per event (`id:` = seq, `event:` = kind, "
                "`data:` = the event as JSON), then `event: end` with the run's final status.",
                EVENTS_EXAMPLE))
async def runs_events_stream(
    request: HttpRequest,
    run_id: int,
    after: str | None = AFTER,
    last_event_id: str | None = LAST_EVENT_ID,
) -> StreamingHttpResponse:
    """The run's timeline, live, as server-sent events. Resumable without gaps or duplicates:
    reconnect with `Last-Event-ID` (or `?after=`) set to the last id received. The stream ends
    with an `end` message when the run has ended; see docs/streams.md."""
    run = await sync_to_async(selectors.run_get)(request.user, run_id)
    cursor = stream_cursor(after, last_event_id, last_seq=run.last_event_seq,
                           what=f"run {run.pk}")
    return sse_response(sse_stream(functools.partial(run_events_poll, run.pk), cursor,
                                   live=isinstance(request, ASGIRequest),
                                   label=f"run {run.pk} events"))


@router.get("/executions/{int:execution_id}/logs/stream", response=RESPONSES,
            operation_id="executions_logs_stream",
            openapi_extra=_stream_responses(
                "Server-sent events: one message per log chunk (`id:` = seq, `event: log`, "
                "`data:` = the chunk as JSON), then `event: end` with the execution's final "
                "status.", LOGS_EXAMPLE))
async def executions_logs_stream(
    request: HttpRequest,
    execution_id: int,
    after: str | None = AFTER,
    last_event_id: str | None = LAST_EVENT_ID,
) -> StreamingHttpResponse:
    """The execution's output, live, as server-sent events (each chunk is several lines of one
    stream). Resumable like the events stream; ends when the execution has ended."""
    execution = await sync_to_async(selectors.execution_get)(request.user, execution_id)
    cursor = stream_cursor(after, last_event_id, last_seq=execution.last_log_seq,
                           what=f"execution {execution.pk}")
    return sse_response(sse_stream(functools.partial(execution_logs_poll, execution.pk), cursor,
                                   live=isinstance(request, ASGIRequest),
                                   label=f"execution {execution.pk} logs"))
