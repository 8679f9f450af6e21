"""Prometheus metrics read from Redis at scrape time.

Workers are many short-lived processes; rather than scrape each of them, they add their
counts to a few Redis hashes (see :mod:`worker.jobs`) and this collector turns those,
plus the queue lists themselves, into metrics. One scrape of any API replica sees the
whole system.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from worker.jobs import (
    DEAD_SET,
    DURATION_BUCKETS,
    SCHEDULED_SET,
    STATS_DURATION,
    STATS_FAILURES,
    STATS_STATES,
    text,
)
from worker.queues import in_flight, read_depths
from worker.reaper import STATS_REAPED


class RedisCollector(Collector):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "bgworker_queue_depth",
            "Jobs waiting in each queue (LLEN of its list)",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "bgworker_queue_oldest_age_seconds",
            "Age of the oldest job waiting in each queue (0 when empty)",
            labels=["queue"],
        )
        for q in read_depths(self.client):
            depth.add_metric([q.name], q.waiting)
            age.add_metric([q.name], q.oldest_age_seconds)
        yield depth
        yield age
        yield GaugeMetricFamily(
            "bgworker_jobs_in_flight",
            "Jobs taken by a worker and not yet acknowledged",
            value=in_flight(self.client),
        )
        yield GaugeMetricFamily(
            "bgworker_jobs_scheduled",
            "Jobs waiting for their delay or retry backoff to pass",
            value=self.client.zcard(SCHEDULED_SET),
        )
        yield CounterMetricFamily(
            "bgworker_jobs_requeued_lost",
            "Jobs whose message was lost in transit (popped, never registered in unacked) "
            "and that the API's reaper queued again",
            value=int(self.client.get(STATS_REAPED) or 0),
        )
        yield GaugeMetricFamily(
            "bgworker_dead_letter_size",
            "Jobs in the dead-letter set",
            value=self.client.zcard(DEAD_SET),
        )
        states = CounterMetricFamily(
            "bgworker_jobs", "Jobs that entered each state", labels=["state"]
        )
        for state, count in sorted(self.client.hgetall(STATS_STATES).items()):
            states.add_metric([text(state)], int(count))
        yield states
        failures = CounterMetricFamily(
            "bgworker_job_failures",
            "Jobs that failed or died, by task and error code",
            labels=["task", "code"],
        )
        for key, count in sorted(self.client.hgetall(STATS_FAILURES).items()):
            task, _, code = text(key).partition("|")
            failures.add_metric([task, code], int(count))
        yield failures
        yield self._durations()

    def _durations(self) -> HistogramMetricFamily:
        hist = HistogramMetricFamily(
            "bgworker_job_duration_seconds", "Run time of succeeded jobs", labels=["task"]
        )
        per_task: dict[str, dict[str, float]] = defaultdict(dict)
        for key, value in self.client.hgetall(STATS_DURATION).items():
            task, _, field = text(key).partition("|")
            per_task[task][field] = float(value)
        for task, fields in sorted(per_task.items()):
            cumulative, buckets = 0.0, []
            for bound in [*map(str, DURATION_BUCKETS), "+Inf"]:
                cumulative += fields.get(bound, 0.0)
                buckets.append((bound, cumulative))
            hist.add_metric([task], buckets, sum_value=fields.get("sum", 0.0))
        return hist
