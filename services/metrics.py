"""Prometheus metrics about the pipeline, read from PostgreSQL and the broker at scrape time.

Why a collector in the API and not counters in the workers: stages run in many Celery
worker processes on many hosts, forked and recycled (worker_max_tasks_per_child).
Counters kept inside them would need prometheus-client's multiprocess mode (a shared
folder of mmap files per host, cleaned up on every restart) plus one scrape target per
host. PostgreSQL and Redis already hold every stage's outcome and every waiting message,
whoever ran it, so one query at scrape time sees all workers at once, survives restarts,
and cannot drift from what the API reports.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models import JOB_STATUSES, Job, JobStage, WebhookDelivery
from services.broker import queue_depths
from services.queue_stats import stage_seconds
from services.queues import connect

log = logging.getLogger("conveyor.metrics")

# Stages take from well under a second (notify) to an hour (a long transcode).
STAGE_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def stage_histograms(session: Session) -> dict[str, tuple[list[tuple[str, float]], float]]:
    """Per stage, the cumulative bucket counts (Prometheus's `le` buckets, +Inf last) and the
    sum of seconds over every succeeded attempt still in the database, in one query."""
    seconds = stage_seconds()
    columns: list[Any] = [func.count().filter(seconds <= bound) for bound in STAGE_BUCKETS]
    rows = session.execute(
        select(JobStage.name, *columns, func.count(), func.coalesce(func.sum(seconds), 0.0))
        .where(JobStage.status == "succeeded", JobStage.started_at.is_not(None))
        .group_by(JobStage.name)
    ).all()
    histograms = {}
    for name, *counts in rows:
        cumulative, total, total_seconds = counts[: len(STAGE_BUCKETS)], counts[-2], counts[-1]
        buckets = [(str(bound), float(count)) for bound, count in zip(STAGE_BUCKETS, cumulative, strict=True)]
        histograms[name] = ([*buckets, ("+Inf", float(total))], float(total_seconds))
    return histograms


class PipelineCollector(Collector):
    """Jobs by status, stage durations, webhook outcomes (PostgreSQL) and queue depths (Redis).

    A source that does not answer is reported through `conveyor_scrape_source_up` instead of
    failing the scrape, so the HTTP metrics still arrive while PostgreSQL or Redis is down."""

    def __init__(self, sessions: sessionmaker[Session], redis_url: str, queues: Mapping[str, str]) -> None:
        self.sessions = sessions
        self.redis_url = redis_url
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
            by_status = {
                status: count
                for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status))
            }
            histograms = stage_histograms(session)
            deliveries = {
                ok: count
                for ok, count in session.execute(
                    select(WebhookDelivery.ok, func.count()).group_by(WebhookDelivery.ok)
                )
            }
        jobs = GaugeMetricFamily("conveyor_jobs", "Jobs in the database by status.", labels=["status"])
        for status in JOB_STATUSES:
            jobs.add_metric([status], by_status.get(status, 0))
        yield jobs
        durations = HistogramMetricFamily(
            "conveyor_stage_duration_seconds",
            "Duration of succeeded stage attempts (from job_stages started_at/finished_at).",
            labels=["stage"],
        )
        for stage in self.queues:
            buckets, seconds = histograms.get(
                stage, ([*((str(bound), 0.0) for bound in STAGE_BUCKETS), ("+Inf", 0.0)], 0.0)
            )
            durations.add_metric([stage], buckets, seconds)
        yield durations
        webhooks = CounterMetricFamily(
            "conveyor_webhook_deliveries",
            "Webhook delivery attempts by outcome (webhook_deliveries).",
            labels=["outcome"],
        )
        webhooks.add_metric(["delivered"], deliveries.get(True, 0))
        webhooks.add_metric(["failed"], deliveries.get(False, 0))
        yield webhooks

    def _queue_depths(self) -> GaugeMetricFamily:
        client = connect(self.redis_url)
        try:
            depths = queue_depths(client, self.queues.values())
        finally:
            client.close()
        gauge = GaugeMetricFamily(
            "conveyor_queue_depth", "Messages waiting in each broker queue.", labels=["queue"]
        )
        for queue, depth in depths.items():
            gauge.add_metric([queue], depth)
        return gauge
