"""Log records that say which run and execution they are about.

`log_context(run_id=..., execution_id=...)` sets context variables for the code inside it (the
worker wraps each attempt in it); `ContextFilter` copies them onto every record, so both the
plain and the JSON format (LOG_FORMAT=json, one object per line for log shippers) carry
`run_id` and `execution_id` without each call site passing them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

_run_id: ContextVar[int | None] = ContextVar("switchyard_run_id", default=None)
_execution_id: ContextVar[int | None] = ContextVar("switchyard_execution_id", default=None)


@contextlib.contextmanager
def log_context(*, run_id: int | None = None, execution_id: int | None = None) -> Iterator[None]:
    tokens = (_run_id.set(run_id), _execution_id.set(execution_id))
    try:
        yield
    finally:
        _run_id.reset(tokens[0])
        _execution_id.reset(tokens[1])


class ContextFilter(logging.Filter):
    """Adds run_id and execution_id (None outside an attempt) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "run_id"):
            record.run_id = _run_id.get()
        if not hasattr(record, "execution_id"):
            record.execution_id = _execution_id.get()
        return True


class PlainFormatter(logging.Formatter):
    """The human format, with the ids appended when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = [f"{k}={getattr(record, k)}" for k in ("run_id", "execution_id")
               if getattr(record, k, None) is not None]
        return f"{text} [{' '.join(ids)}]" if ids else text
