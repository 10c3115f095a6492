"""Prometheus metrics, read from the database at scrape time, so every web process of every
machine answers with the same figures (no per-process counters to aggregate).

    switchyard_executions{state}                         executions by state (gauge)
    switchyard_queue_depth{state}                        pending and queued executions
    switchyard_queue_oldest_waiting_seconds              age of the oldest pending/queued one
    switchyard_execution_duration_seconds{project,task}  finished executions (histogram)
    switchyard_attempts_total{outcome}                   attempts that ended, by how
    switchyard_attempts_running                          attempts not ended yet
    switchyard_workers_alive                             workers with a recent heartbeat
    switchyard_webhook_deliveries_total{result}          deliveries that ended (succeeded, failed)
    switchyard_webhook_deliveries_open{state}            deliveries pending or retrying
    switchyard_reaper_repairs_total{kind}                repairs since the installation began
    switchyard_runs{state}                               runs by state (gauge)

The counters (`_total`, the histogram) are counts of rows, so pruning old runs lowers them;
Prometheus reads a decrease as a counter reset, which `rate()` handles. Each scrape costs a
handful of aggregate queries (GROUP BY over indexed columns; the histogram one scans finished
executions: see docs/operations.md for large installations).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runs.models import Attempt, Execution, ExecutionStatus, Run, RunStatus

BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600)


def _seconds(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value) / 1_000_000  # SQLite returns microseconds for a duration sum


class SwitchyardCollector(Collector):
    """Collects every metric in the module docstring, fresh on each scrape."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        by_state = dict(Execution.objects.order_by().values_list("status")
                        .annotate(n=Count("pk")).values_list("status", "n"))
        executions = GaugeMetricFamily("switchyard_executions", "Executions by state.",
                                       labels=["state"])
        for state in ExecutionStatus.values:
            executions.add_metric([state], by_state.get(state, 0))
        yield executions

        depth = GaugeMetricFamily("switchyard_queue_depth",
                                  "Executions waiting to start (pending) or to be claimed "
                                  "(queued).", labels=["state"])
        for state in (ExecutionStatus.PENDING, ExecutionStatus.QUEUED):
            depth.add_metric([state], by_state.get(state, 0))
        yield depth

        oldest = Execution.objects.filter(
            status__in=[ExecutionStatus.PENDING, ExecutionStatus.QUEUED]
        ).aggregate(t=Min("created_at"))["t"]
        yield GaugeMetricFamily(
            "switchyard_queue_oldest_waiting_seconds",
            "Seconds the oldest pending or queued execution has waited (0: none waits).",
            value=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)

        runs = dict(Run.objects.order_by().values_list("status").annotate(n=Count("pk"))
                    .values_list("status", "n"))
        run_gauge = GaugeMetricFamily("switchyard_runs", "Runs by state.", labels=["state"])
        for state in RunStatus.values:
            run_gauge.add_metric([state], runs.get(state, 0))
        yield run_gauge

        yield self._durations()

        # A counter only grows: attempts still running are a gauge of their own, not an
        # "outcome" that shrinks as they end.
        attempts = CounterMetricFamily("switchyard_attempts", "Attempts that ended, by how.",
                                       labels=["outcome"])
        running = 0
        for outcome, n in (Attempt.objects.order_by().values_list("outcome")
                           .annotate(n=Count("pk")).values_list("outcome", "n")):
            if outcome:
                attempts.add_metric([outcome], n)
            else:
                running += n
        yield attempts
        yield GaugeMetricFamily("switchyard_attempts_running", "Attempts not ended yet.",
                                value=running)

        from jobs.registry import workers_alive

        yield GaugeMetricFamily("switchyard_workers_alive",
                                "Worker processes with a recent heartbeat.",
                                value=workers_alive(now=now).count())

        from hooks.models import DeliveryStatus, WebhookDelivery

        deliveries = dict(WebhookDelivery.objects.order_by().values_list("status")
                          .annotate(n=Count("pk")).values_list("status", "n"))
        hooks = CounterMetricFamily("switchyard_webhook_deliveries",
                                    "Webhook deliveries that ended, by result.",
                                    labels=["result"])
        pending = GaugeMetricFamily("switchyard_webhook_deliveries_open",
                                    "Webhook deliveries not ended yet, by state.",
                                    labels=["state"])
        for status in DeliveryStatus.values:
            ended = status in (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED)
            (hooks if ended else pending).add_metric([status], deliveries.get(status, 0))
        yield hooks
        yield pending

        from jobs.models import ReaperRepairCount
        from jobs.reaper import NOT_REPAIRS, ReapReport

        totals = dict(ReaperRepairCount.objects.values_list("kind", "total"))
        repairs = CounterMetricFamily("switchyard_reaper_repairs",
                                      "Repairs made by the reaper, by kind.", labels=["kind"])
        for kind in ReapReport().as_dict():
            if kind not in NOT_REPAIRS:
                repairs.add_metric([kind], totals.get(kind, 0))
        yield repairs

    def _durations(self) -> HistogramMetricFamily:
        duration = ExpressionWrapper(F("finished_at") - F("started_at"),
                                     output_field=DurationField())
        buckets = {f"le_{b}": Count("pk", filter=Q(duration__lte=timedelta(seconds=b)))
                   for b in BUCKETS}
        rows = (Execution.objects.filter(finished_at__isnull=False, started_at__isnull=False)
                .annotate(duration=duration)
                .values("run__project__slug", "run__task__slug")
                .annotate(n=Count("pk"), total=Sum("duration"), **buckets)
                .order_by("run__project__slug", "run__task__slug"))
        family = HistogramMetricFamily(
            "switchyard_execution_duration_seconds",
            "Durations of finished executions, from start to end, per task.",
            labels=["project", "task"])
        for row in rows:
            cumulative = [(str(float(b)), row[f"le_{b}"]) for b in BUCKETS]
            cumulative.append(("+Inf", row["n"]))
            family.add_metric([row["run__project__slug"], row["run__task__slug"]], cumulative,
                              sum_value=_seconds(row["total"]))
        return family


def metrics_text() -> bytes:
    """The exposition in Prometheus' text format."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SwitchyardCollector())
    return generate_latest(registry)
