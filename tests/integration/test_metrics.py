"""GET /metrics: pipeline metrics read from PostgreSQL and Redis at scrape time, whichever
worker process did the work, and the API's own request latency by route template."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models import JOB_STATUSES, Job
from tests.fixtures import ApiClient, WebhookReceiver, WorkerProcess, wait_until

pytestmark = pytest.mark.integration


def scrape(api_url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted labels: value}."""
    answer = requests.get(f"{api_url}/metrics", timeout=10)
    assert answer.status_code == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_cover_jobs_stages_queues_webhooks_and_requests(
    api_url: str,
    client: ApiClient,
    workers: WorkerProcess,
    webhook_receiver: WebhookReceiver,
    small_clip: Path,
    sessions: sessionmaker[Session],
) -> None:
    job_id = client.upload(small_clip, {"webhook_url": webhook_receiver.url}).json()["id"]
    assert client.wait_for_job(job_id)["status"] == "succeeded"
    assert webhook_receiver.event.wait(30)
    client.get(f"/api/v1/jobs/{job_id}")

    def delivered() -> dict[str, dict[tuple[tuple[str, str], ...], float]] | None:
        samples = scrape(api_url)
        webhooks = samples["conveyor_webhook_deliveries_total"]
        return samples if webhooks[(("outcome", "delivered"),)] >= 1 else None

    samples = wait_until(delivered, timeout=30, what="the delivery to be recorded")
    assert samples["conveyor_jobs"][(("status", "succeeded"),)] >= 1
    assert set(samples["conveyor_jobs"]) == {
        (("status", status),) for status in ("queued", "running", "succeeded", "failed", "canceled")
    }
    for stage in ("fetch", "transcode", "upload", "analyze", "notify"):
        assert (("stage", stage),) in samples["conveyor_stage_duration_seconds_count"]
    transcodes = samples["conveyor_stage_duration_seconds_count"][(("stage", "transcode"),)]
    assert transcodes >= 1
    assert (
        samples["conveyor_stage_duration_seconds_bucket"][(("le", "+Inf"), ("stage", "transcode"))]
        == transcodes
    )
    assert samples["conveyor_stage_duration_seconds_sum"][(("stage", "transcode"),)] > 0
    assert {labels for labels in samples["conveyor_queue_depth"]} == {
        (("queue", queue),) for queue in ("fetch", "video", "upload", "analyze", "notify")
    }
    assert samples["conveyor_scrape_source_up"] == {(("source", "postgres"),): 1, (("source", "redis"),): 1}

    # The counters the triggers keep agree with the rows they count.
    def counted_as_stored() -> bool:
        with sessions() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
            stored = {status: count for status, count in rows}
        scraped = scrape(api_url)["conveyor_jobs"]
        return all(scraped[(("status", status),)] == stored.get(status, 0) for status in JOB_STATUSES)

    wait_until(counted_as_stored, timeout=30, what="conveyor_jobs to match the jobs table")

    routes = {dict(labels)["route"] for labels in samples["conveyor_http_request_duration_seconds_count"]}
    assert "/api/v1/jobs/<job_id>" in routes and "/api/v1/uploads" in routes
    assert not any(job_id in route for route in routes)  # templates, never raw ids
