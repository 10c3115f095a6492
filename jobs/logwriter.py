"""Batched log ingestion: lines are buffered and written as a few LogChunk rows per flush
(one bulk INSERT), never one INSERT per line.

A chunk holds consecutive lines of one stream; `seq` is allocated in memory because an execution
has one writer at a time (the holder of the current attempt). Output past the per-execution cap
is dropped with one visible notice; over-long lines are cut with a marker.

In a worker (autocommit) the INSERTs run on a background thread with its own connection, so
reading the process's output and writing to the database overlap; a small bounded queue keeps
memory flat and slows the reader when the database falls behind. Inside a transaction (tests,
callers holding one) rows written by another connection could not see the execution row, so
the writes happen inline.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque

from django.conf import settings
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from runs.models import LogChunk, LogStream
from runs.secret_box import mask_secrets


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
        if attempt == 1:
            self.next_seq = 1  # the first attempt writes the first chunk; no query needed
        else:
            last = LogChunk.objects.filter(execution_id=execution_id).aggregate(m=Max("seq"))
            self.next_seq = (last["m"] or 0) + 1
        # Segments of consecutive same-stream lines, in arrival order.
        self._segments: list[tuple[str, list[str]]] = []
        self._pending = 0
        self._last_flush = time.monotonic()
        self.bytes_written = 0
        self.lines_written = 0
        self.truncated = False
        self.stderr_tail: deque[str] = deque(maxlen=tail_lines)
        self._threaded = not connection.in_atomic_block
        self._queue: queue.Queue[list[LogChunk] | None] = queue.Queue(maxsize=4)
        self._writer: threading.Thread | None = None
        self._writer_error: BaseException | None = None

    def add(self, stream: str, line: str) -> None:
        """Buffer one line (without its newline); flushes when the batch is full."""
        if len(line) > self.max_line:
            line = f"{line[: self.max_line]} … [line cut: {len(line)} characters]"
        if self.secret_values:
            line = mask_secrets(line, self.secret_values)
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
        if self.truncated or max(map(len, lines)) > self.max_line:
            for line in lines:
                self.add(stream, line)
            return
        if self.secret_values:
            lines = mask_secrets("\n".join(lines), self.secret_values).split("\n")
        if stream == LogStream.STDERR:
            self.stderr_tail.extend(lines[-self.stderr_tail.maxlen:])
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
        """Write buffered lines as one bulk INSERT (autocommit: lines show up immediately)."""
        self._last_flush = time.monotonic()
        if not self._segments:
            return
        now = timezone.now()
        rows = []
        for stream, lines in self._segments:
            rows.append(
                LogChunk(
                    execution_id=self.execution_id,
                    attempt=self.attempt,
                    seq=self.next_seq,
                    stream=stream,
                    text="\n".join(lines),
                    line_count=len(lines),
                    created_at=now,
                )
            )
            self.next_seq += 1
            self.lines_written += len(lines)
        self._segments = []
        self._pending = 0
        if not self._threaded:
            LogChunk.objects.bulk_create(rows)
            return
        if self._writer_error is not None:
            raise self._writer_error
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                            name=f"logwriter-{self.execution_id}")
            self._writer.start()
        self._queue.put(rows)

    def _write_loop(self) -> None:
        try:
            while True:
                rows = self._queue.get()
                if rows is None:
                    return
                if self._writer_error is None:
                    try:
                        LogChunk.objects.bulk_create(rows)
                    except BaseException as exc:  # reported by close(); keep draining
                        self._writer_error = exc
        finally:
            connection.close()

    def close(self) -> None:
        """Flush what is buffered and wait until every chunk is stored."""
        self.flush()
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        if self._writer_error is not None:
            raise self._writer_error
