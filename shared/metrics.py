"""`/metrics` in Prometheus's text format (SPEC section 13), written by prometheus-client.

Two kinds of figure, both read from Redis at scrape time, so one scrape of any API instance
sees every worker, exactly, whatever restarts:

- gauges of what is there now: tasks by queue and status, ready depth, live instances (the
  exact counts of `/api/stats`);
- histograms and counters of what happened: run time and queue wait by queue, type and
  outcome, retries, recoveries, webhook deliveries. The scripts that end a run (complete,
  fail, record_delivery) add to their queue's `metrics` HASH (tally_run in _lib.lua), in the
  call they make anyway: a few HINCRBY per call, no round trip and no Python per task.

Why not an exporter in each worker process: workers have no HTTP server, replicas come and
go (each would be a scrape target, and a restarted one starts its counters from zero), and
the figures would be per process where operators want them per queue. The cost in Redis is
measured in docs/benchmarks.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from shared import heartbeats, queries
from shared.models import Stats
from shared.redis import Conn, guarded

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Upper bounds of the histogram buckets, in seconds: METRIC_BOUNDS_MS in _lib.lua, where the
# scripts count bucket i (1-based) for bound i and len + 1 for +Inf.
BUCKETS_SECONDS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
HISTOGRAMS = {
    "run": ("taskqueue_task_run_seconds", "Run time of a task's attempt, started -> ended."),
    "wait": (
        "taskqueue_task_wait_seconds",
        "Queue wait of a task's attempt: created, or due (scheduled, retry) -> started.",
    ),
}
COUNTERS = {
    "retries": ("taskqueue_task_retries", "Attempts that failed and were retried.", "type"),
    "recoveries": (
        "taskqueue_task_recoveries",
        "Attempts of a lost worker (dead, or its lease expired) put back to run again.",
        "type",
    ),
    "deliveries": (
        "taskqueue_webhook_deliveries",
        "Completion-webhook delivery attempts, by outcome (delivered, retrying, failed, refused).",
        "outcome",
    ),
}


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_SECONDS) + 1))
    sum_ms: int = 0


@dataclass
class Snapshot:
    """Everything one scrape shows, read from Redis."""

    stats: Stats
    instances: dict[str, int]
    tallies: dict[str, dict[str, str]]  # queue -> its metrics HASH


async def read(conn: Conn, dead_after_seconds: float) -> Snapshot:
    stats = await queries.get_stats(conn, dead_after_seconds=dead_after_seconds)
    instances = await heartbeats.live_counts(conn, dead_after_seconds)
    names = list(stats.queues)
    async with conn.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(conn.queue(name).metrics)
        replies: Sequence[dict[str, str]] = await guarded(pipe.execute())
    return Snapshot(stats, instances, dict(zip(names, replies, strict=True)))


def render(snapshot: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))
    return generate_latest(registry)


class _Collector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self._gauges()
        yield from self._histograms()
        yield from self._counters()

    def _gauges(self) -> Iterator[Metric]:
        queues = self.snapshot.stats.queues
        tasks = GaugeMetricFamily(
            "taskqueue_tasks",
            "Tasks currently in each status, per queue.",
            labels=["queue", "status"],
        )
        kept = GaugeMetricFamily(
            "taskqueue_tasks_total", "Tasks kept (all statuses), per queue.", labels=["queue"]
        )
        depth = GaugeMetricFamily(
            "taskqueue_queue_depth",
            "Ready tasks per queue and priority.",
            labels=["queue", "priority"],
        )
        for queue, one in queues.items():
            for status, count in one.by_status().items():
                tasks.add_metric([queue, status], count)
            kept.add_metric([queue], one.total_tasks)
            for priority, n in one.queue_depth_by_priority.items():
                depth.add_metric([queue, priority], n)
        instances = GaugeMetricFamily(
            "taskqueue_instances", "Live service instances by heartbeat.", labels=["service"]
        )
        for service, n in self.snapshot.instances.items():
            instances.add_metric([service], n)
        yield from (tasks, kept, depth, instances)

    def _histograms(self) -> Iterator[Metric]:
        # (kind, queue, type, outcome) -> buckets and sum
        seen: dict[tuple[str, str, str, str], _Histogram] = defaultdict(_Histogram)
        for queue, tally in self.snapshot.tallies.items():
            for name, raw in tally.items():
                kind, _, rest = name.partition("|")
                if kind in HISTOGRAMS:
                    task_type, outcome, bucket = rest.rsplit("|", 2)
                    seen[(kind, queue, task_type, outcome)].buckets[int(bucket) - 1] += int(raw)
                elif kind.endswith("_sum") and kind[:-4] in HISTOGRAMS:
                    task_type, outcome = rest.rsplit("|", 1)
                    seen[(kind[:-4], queue, task_type, outcome)].sum_ms += int(raw)
        for kind, (metric, doc) in HISTOGRAMS.items():
            family = HistogramMetricFamily(metric, doc, labels=["queue", "type", "outcome"])
            for (which, queue, task_type, outcome), one in sorted(seen.items()):
                if which != kind:
                    continue
                cumulative, running = [], 0
                for bound, count in zip((*BUCKETS_SECONDS, float("inf")), one.buckets, strict=True):
                    running += count
                    cumulative.append((_le(bound), running))
                family.add_metric(
                    [queue, task_type, outcome], cumulative, sum_value=one.sum_ms / 1000
                )
            yield family

    def _counters(self) -> Iterator[Metric]:
        for kind, (metric, doc, label) in COUNTERS.items():
            family = CounterMetricFamily(metric, doc, labels=["queue", label])
            for queue, tally in sorted(self.snapshot.tallies.items()):
                for name, raw in sorted(tally.items()):
                    which, _, value = name.partition("|")
                    if which == kind:
                        family.add_metric([queue, value], int(raw))
            yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
