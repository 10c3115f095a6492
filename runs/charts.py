"""Server-rendered charts: the geometry of the project page's chart of recent run durations and
outcomes, drawn as SVG by `templates/runs/partials/duration_chart.html`.

No JavaScript and no chart library: bars are computed here in viewBox units, and the template
only places them. Outcome is never told by colour alone: each outcome has its own fill pattern
and a glyph under its bar, the legend spells them out, every bar has a text title, and a table
of the same figures sits beside the chart for screen readers and for people who want numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from statistics import median

from django.urls import reverse

from runs.models import Run, RunStatus

# viewBox: a fixed canvas the browser scales; the page lets it scroll sideways on a phone
# rather than shrink its text below legibility.
WIDTH = 720
HEIGHT = 240
LEFT = 56  # room for the y-axis labels
RIGHT = 12
TOP = 14
BOTTOM = 34  # room for the outcome glyphs and the x-axis caption
MIN_BAR = 2.0  # a run that took no time still shows as a sliver
# Tick steps in seconds, from one second to a day; the chart uses the smallest step that
# needs at most MAX_TICKS ticks to cover the longest run.
STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
         86400)
MAX_TICKS = 5

GLYPHS = {
    RunStatus.SUCCEEDED: "✓",
    RunStatus.FAILED: "✕",
    RunStatus.TIMED_OUT: "◔",
    RunStatus.CANCELLED: "⊘",
}


def _seconds(run: Run) -> float:
    if run.started_at is None or run.finished_at is None:
        return 0.0  # ended before it started (cancelled while queued, say)
    return max(0.0, (run.finished_at - run.started_at).total_seconds())


def short_duration(seconds: float) -> str:
    """Axis labels: '0', '45 s', '5 min', '1.5 h', '2 d'."""
    if seconds <= 0:
        return "0"
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    if seconds < 86400:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 86400:g} d"


@dataclass
class Bar:
    run_id: int
    status: str
    label: str  # the outcome in words
    glyph: str
    task: str
    duration: str
    x: float
    y: float
    width: float
    height: float

    @property
    def url(self) -> str:
        return reverse("run_detail", args=[self.run_id])

    @property
    def center(self) -> float:
        return self.x + self.width / 2

    @property
    def title(self) -> str:
        return f"Run #{self.run_id} · {self.task} · {self.label} · {self.duration}"


@dataclass
class DurationChart:
    bars: list[Bar] = field(default_factory=list)
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (y, label)
    outcomes: list[tuple[str, str, int]] = field(default_factory=list)  # (status, label, n)
    median: str = ""
    longest: str = ""
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    baseline: float = HEIGHT - BOTTOM
    glyph_y: float = HEIGHT - BOTTOM + 15
    caption_y: float = HEIGHT - 4

    @property
    def summary(self) -> str:
        """The chart in one sentence (its accessible description, and the text above it)."""
        if not self.bars:
            return "No run of this project has ended yet."
        parts = ", ".join(f"{n} {label.lower()}" for _status, label, n in self.outcomes)
        return (f"Last {len(self.bars)} ended run{'s' if len(self.bars) != 1 else ''}: "
                f"{parts}. Median duration {self.median}, longest {self.longest}.")


def duration_chart(runs: list[Run]) -> DurationChart:
    """Bars for `runs` (oldest first), scaled to the longest, with labelled y-axis ticks."""
    from runs.views import duration_text  # the pages' one duration format

    chart = DurationChart()
    if not runs:
        return chart
    seconds = [_seconds(run) for run in runs]
    longest = max(seconds)
    step = next((s for s in STEPS if s * MAX_TICKS >= longest), STEPS[-1])
    while step * MAX_TICKS < longest:  # longer than five days: whole days per tick
        step *= 2
    ticks = max(1, int(-(-longest // step)))  # ceil, at least one
    top_value = step * ticks
    plot_height = chart.baseline - TOP
    plot_width = chart.right_edge - LEFT
    slot = plot_width / len(runs)
    bar_width = max(2.0, min(28.0, slot * 0.7))

    def y_of(value: float) -> float:
        return chart.baseline - plot_height * (value / top_value)

    chart.ticks = [(round(y_of(step * i), 1), short_duration(step * i)) for i in range(ticks + 1)]
    counts: dict[str, int] = {}
    for index, (run, value) in enumerate(zip(runs, seconds, strict=True)):
        height = max(MIN_BAR, plot_height * value / top_value)
        status = RunStatus(run.status)
        counts[status] = counts.get(status, 0) + 1
        chart.bars.append(Bar(
            run_id=run.pk, status=status.value, label=status.label,
            glyph=GLYPHS.get(status, "•"), task=run.task.name,
            duration=duration_text(timedelta(seconds=value)) or "0 s",
            x=round(LEFT + slot * index + (slot - bar_width) / 2, 1),
            y=round(chart.baseline - height, 1), width=round(bar_width, 1),
            height=round(height, 1),
        ))
    chart.outcomes = [(status.value, status.label, counts[status])
                      for status in GLYPHS if counts.get(status)]
    chart.median = duration_text(timedelta(seconds=median(seconds))) or "0 s"
    chart.longest = duration_text(timedelta(seconds=longest)) or "0 s"
    return chart
