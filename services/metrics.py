"""Prometheus metrics about the pipeline, read from PostgreSQL and the broker at scrape time.

Why a collector in the API and not counters in the workers: stages run in many Celery
worker processes on many hosts, forked and recycled (worker_max_tasks_per_child).
Counters kept inside them would need prometheus-client's multiprocess mode (a shared
folder of mmap files per host, cleaned up on every restart) plus one scrape target per
host. PostgreSQL and Redis already hold every stage's outcome and every waiting message,
whoever ran it, so a read at scrape time sees all workers at once and survives restarts.

A scrape costs the same at any number of jobs: jobs by status, stage durations and webhook
attempts are counters kept in `metric_counts` by the transactions that change them (triggers
for jobs and stages, see its migration; services/webhooks for attempts), summed over a few
dozen rows; queue depths are one pipelined round trip of LLENs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models import JOB_STATUSES, MetricCount
from services.broker import queue_keys

log = logging.getLogger("conveyor.metrics")

# Stages take from well under a second (notify) to an hour (a long transcode). The trigger
# that counts them (migration a17e0d9b1c06) buckets with the same bounds.
STAGE_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def counts(session: Session) -> dict[tuple[str, str], float]:
    """(metric, label) -> value, over every shard."""
    rows = session.execute(
        select(MetricCount.metric, MetricCount.label, func.sum(MetricCount.value)).group_by(
            MetricCount.metric, MetricCount.label
        )
    )
    return {(metric, label): float(value) for metric, label, value in rows}


def stage_histogram(
    counted: Mapping[tuple[str, str], float], stage: str
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative `le` buckets (+Inf last) and the sum of seconds of a stage's succeeded attempts."""
    cumulative, buckets = 0.0, []
    for bound in STAGE_BUCKETS:
        cumulative += counted.get(("stage_duration", f"{stage}:{bound}"), 0.0)
        buckets.append((str(bound), cumulative))
    cumulative += counted.get(("stage_duration", f"{stage}:+Inf"), 0.0)
    return [*buckets, ("+Inf", cumulative)], counted.get(("stage_duration", f"{stage}:sum"), 0.0)


def queue_depths(client: redis.Redis, queues: Mapping[str, str]) -> dict[str, int]:
    """Messages waiting per queue, every priority list of every queue in one round trip."""
    names = list(dict.fromkeys(queues.values()))
    with client.pipeline(transaction=False) as pipe:
        for queue in names:
            for key in queue_keys(queue):
                pipe.llen(key)
        lengths = iter(pipe.execute())
    return {queue: sum(int(next(lengths)) for _ in queue_keys(queue)) for queue in names}


class PipelineCollector(Collector):
    """Jobs by status, stage durations, webhook outcomes (PostgreSQL) and queue depths (Redis).

    A source that does not answer is reported through `conveyor_scrape_source_up` instead of
    failing the scrape, so the HTTP metrics still arrive while PostgreSQL or Redis is down."""

    def __init__(
        self, sessions: sessionmaker[Session], client: redis.Redis, queues: Mapping[str, str]
    ) -> None:
        self.sessions = sessions
        self.client = client
        self.queues = queues  # stage -> queue

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "conveyor_scrape_source_up", "Whether a data source answered this scrape.", labels=["source"]
        )
        try:
            yield from self._from_database()
            up.add_metric(["postgres"], 1)
        except Exception:
            log.warning("metrics: PostgreSQL did not answer", exc_info=True)
            up.add_metric(["postgres"], 0)
        try:
            yield self._queue_depths()
            up.add_metric(["redis"], 1)
        except Exception:
            log.warning("metrics: Redis did not answer", exc_info=True)
            up.add_metric(["redis"], 0)
        yield up

    def _from_database(self) -> Iterator[Any]:
        with self.sessions() as session:
            counted = counts(session)
        jobs = GaugeMetricFamily("conveyor_jobs", "Jobs in the database by status.", labels=["status"])
        for status in JOB_STATUSES:
            jobs.add_metric([status], counted.get(("jobs", status), 0.0))
        yield jobs
        durations = HistogramMetricFamily(
            "conveyor_stage_duration_seconds",
            "Duration of succeeded stage attempts (from job_stages started_at/finished_at).",
            labels=["stage"],
        )
        for stage in self.queues:
            buckets, seconds = stage_histogram(counted, stage)
            durations.add_metric([stage], buckets, seconds)
        yield durations
        webhooks = CounterMetricFamily(
            "conveyor_webhook_deliveries", "Webhook delivery attempts by outcome.", labels=["outcome"]
        )
        for outcome in ("delivered", "failed"):
            webhooks.add_metric([outcome], counted.get(("webhook_attempts", outcome), 0.0))
        yield webhooks

    def _queue_depths(self) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily(
            "conveyor_queue_depth", "Messages waiting in each broker queue.", labels=["queue"]
        )
        for queue, depth in queue_depths(self.client, self.queues).items():
            gauge.add_metric([queue], depth)
        return gauge
