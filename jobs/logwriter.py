"""Batched log ingestion: lines are buffered and written as a few LogChunk rows per flush
(one bulk INSERT), never one INSERT per line.

A chunk holds consecutive lines of one stream. Its `seq` is allocated in the database, in the
same transaction as the INSERT, by an UPDATE that only matches while this attempt is the
execution's current, running attempt: a stale worker's late lines are dropped (fenced) instead
of colliding with the current attempt's, and seq order is commit order.

In a worker (autocommit) the writes run on a background thread with its own connection, so
reading the process's output and writing to the database overlap; a small bounded queue keeps
memory flat and slows the reader when the database falls behind. Inside a transaction (tests,
callers holding one) another connection could not see the execution row, so writes are inline.

Writing never raises into the reader: a failure is recorded, later lines are dropped, and
`close()` reports it so the attempt can say its log is incomplete.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from runs.models import Execution, ExecutionStatus, LogChunk, LogStream
from runs.secret_box import mask_secrets

logger = logging.getLogger(__name__)


def text_storable(text: str) -> str:
    """Text every database accepts: no NUL characters, no lone surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


class LogWriter:
    """Collects (stream, line) pairs for one attempt and flushes them in batches."""

    def __init__(
        self,
        *,
        execution_id: int,
        attempt: int,
        secret_values: list[str] | None = None,
        max_bytes: int | None = None,
        batch_lines: int | None = None,
        batch_seconds: float | None = None,
        tail_lines: int = 20,
    ) -> None:
        self.execution_id = execution_id
        self.attempt = attempt
        self.secret_values = [v for v in (secret_values or []) if v]
        self.max_bytes = max_bytes or settings.SWITCHYARD_LOG_MAX_BYTES
        self.max_line = settings.SWITCHYARD_LOG_MAX_LINE
        self.batch_lines = batch_lines or settings.SWITCHYARD_LOG_BATCH_LINES
        self.batch_seconds = batch_seconds or settings.SWITCHYARD_LOG_BATCH_SECONDS
        # Segments of consecutive same-stream lines, in arrival order.
        self._segments: list[tuple[str, list[str]]] = []
        self._pending = 0
        self._last_flush = time.monotonic()
        self.bytes_written = 0
        self.lines_written = 0
        self.truncated = False
        self.fenced = False  # this attempt is no longer current: nothing more is stored
        self.error: str = ""  # why some lines could not be stored
        self.stderr_tail: deque[str] = deque(maxlen=tail_lines)
        self._threaded = not connection.in_atomic_block
        self._queue: queue.Queue[list[tuple[str, str, int]] | None] = queue.Queue(maxsize=4)
        self._writer: threading.Thread | None = None

    def add(self, stream: str, line: str) -> None:
        """Buffer one line (without its newline); flushes when the batch is full."""
        if self.secret_values:  # before cutting, so a secret across the cut is still masked
            line = mask_secrets(line, self.secret_values)
        if len(line) > self.max_line:
            line = f"{line[: self.max_line]} … [line cut: {len(line)} characters]"
        if stream == LogStream.STDERR:
            self.stderr_tail.append(line)
        if self.truncated:
            return
        size = len(line) + 1
        if self.bytes_written + size > self.max_bytes:
            self.truncated = True
            self._append(
                LogStream.SYSTEM,
                f"[switchyard] log truncated: output beyond {self.max_bytes} bytes was "
                "discarded (SWITCHYARD_LOG_MAX_BYTES).",
            )
            self.flush()
            return
        self.bytes_written += size
        self._append(stream, line)
        if self._pending >= self.batch_lines:
            self.flush()

    def add_lines(self, stream: str, lines: list[str]) -> None:
        """Buffer many lines of one stream at once: the fast path for bulk output, with the
        same cap, cut and masking rules as add(), applied per block instead of per line."""
        if not lines:
            return
        if self.secret_values:
            lines = mask_secrets("\n".join(lines), self.secret_values).split("\n")
        if self.truncated or max(map(len, lines)) > self.max_line:
            for line in lines:
                self.add(stream, line)
            return
        if stream == LogStream.STDERR:
            self.stderr_tail.extend(lines[-(self.stderr_tail.maxlen or 20):])
        size = sum(map(len, lines)) + len(lines)
        if self.bytes_written + size > self.max_bytes:
            for line in lines:  # the slow path finds the exact line where the cap falls
                self.add(stream, line)
            return
        self.bytes_written += size
        if self._segments and self._segments[-1][0] == stream:
            self._segments[-1][1].extend(lines)
        else:
            self._segments.append((stream, list(lines)))
        self._pending += len(lines)
        if self._pending >= self.batch_lines:
            self.flush()

    def system(self, message: str) -> None:
        """A notice from Switchyard itself, always kept (kill, timeout, result problems)."""
        if self.secret_values:
            message = mask_secrets(message, self.secret_values)
        self._append(LogStream.SYSTEM, f"[switchyard] {message}")
        self.flush()

    def _append(self, stream: str, line: str) -> None:
        if self._segments and self._segments[-1][0] == stream:
            self._segments[-1][1].append(line)
        else:
            self._segments.append((stream, [line]))
        self._pending += 1

    def due(self) -> bool:
        return self._pending > 0 and time.monotonic() - self._last_flush >= self.batch_seconds

    def flush(self) -> None:
        """Hand the buffered lines to the database (inline, or to the writer thread)."""
        self._last_flush = time.monotonic()
        if not self._segments:
            return
        batch = [(stream, text_storable("\n".join(lines)), len(lines))
                 for stream, lines in self._segments]
        for _stream, _text, count in batch:
            self.lines_written += count
        self._segments = []
        self._pending = 0
        if self.fenced or self.error:
            return
        if not self._threaded:
            self._store(batch)
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                            name=f"logwriter-{self.execution_id}")
            self._writer.start()
        self._queue.put(batch)

    def _store(self, batch: list[tuple[str, str, int]]) -> None:
        if self.fenced or self.error:
            return
        try:
            with transaction.atomic():
                last = self._allocate(len(batch))
                if last is None:
                    self.fenced = True
                    logger.info("execution %s attempt %s is no longer current; its late log "
                                "lines are dropped", self.execution_id, self.attempt)
                    return
                now = timezone.now()
                LogChunk.objects.bulk_create([
                    LogChunk(execution_id=self.execution_id, attempt=self.attempt,
                             seq=last - len(batch) + 1 + i, stream=stream, text=text,
                             line_count=count, created_at=now)
                    for i, (stream, text, count) in enumerate(batch)
                ])
        except Exception as exc:  # the reader must go on draining the pipes whatever happens
            logger.exception("storing log lines of execution %s failed", self.execution_id)
            self.error = f"{type(exc).__name__}: {exc}"[:300]

    def _allocate(self, count: int) -> int | None:
        table = connection.ops.quote_name(Execution._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET last_log_seq = last_log_seq + %s "  # noqa: S608  no input
                "WHERE id = %s AND attempt = %s AND status = %s RETURNING last_log_seq",
                [count, self.execution_id, self.attempt, ExecutionStatus.RUNNING],
            )
            row = cursor.fetchone()
        return row[0] if row else None

    def _write_loop(self) -> None:
        try:
            while True:
                batch = self._queue.get()
                if batch is None:
                    return
                self._store(batch)
        finally:
            connection.close()

    def close(self) -> str:
        """Flush and wait until every chunk is stored. Returns why lines were lost, or ''."""
        self.flush()
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        return self.error
