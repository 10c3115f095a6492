"""Template filters of the pages: durations in the pages' one format (runs.views.duration_text)."""

from __future__ import annotations

from datetime import datetime

from django import template

from runs.models import Run
from runs.views import duration_text

register = template.Library()


@register.filter
def run_duration(run: Run, now: datetime | None) -> str:
    """How long the run took, or has taken so far ('' before it started). `now` comes from
    the view, so every row of a table is measured against the same instant."""
    if run.started_at is None:
        return ""
    return duration_text((run.finished_at or now or run.started_at) - run.started_at)


@register.filter
def seconds_until(when: datetime | None, now: datetime | None) -> str:
    """'4 min 10 s' from `now` to `when` ('' when it has passed)."""
    if when is None or now is None or when <= now:
        return ""
    return duration_text(when - now)


@register.filter
def status_label(value: str) -> str:
    """A run status in words ('timed_out' -> 'Timed out')."""
    from runs.models import RunStatus

    return RunStatus(value).label if value in RunStatus.values else str(value)


@register.simple_tag
def run_table_columns(show_project: bool = False, hide_task: bool = False,
                      compact: bool = False) -> int:
    """How many columns a run table has (for its empty row's colspan)."""
    return 4 + bool(show_project) + (not hide_task) + (0 if compact else 2)
