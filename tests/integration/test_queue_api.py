"""The queue operations API on real workers: health, stats, failed jobs, retry, clean, and
pause → the job waits → resume → the job finishes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import JobEvent
from services.config import get_settings
from services.storage import make_s3_client
from services.workspace import open_workspace
from services.workspace.keys import job_prefix
from tests.fixtures import HOST, ApiClient, WorkerPool, WorkerProcess, start_worker, stop_worker, wait_until

pytestmark = pytest.mark.integration

QUEUES = ("fetch", "video", "upload", "analyze", "notify")


@pytest.fixture
def video_resumed(admin_client: ApiClient) -> Iterator[None]:
    """Whatever a test does to the video queue, the suite after it needs it served again."""
    yield
    assert admin_client.post("/api/v1/queue/resume", json={"queue": "video"}).status_code == 200


def stage(job: dict[str, object], name: str) -> dict[str, object]:
    return next(s for s in job["stages"] if s["name"] == name)  # type: ignore[attr-defined, index]


def test_health_is_public_and_sees_a_worker_on_every_queue(api_url: str, workers: WorkerProcess) -> None:
    def healthy() -> dict[str, object] | None:
        answer = requests.get(f"{api_url}/api/v1/queue/health", timeout=10)  # no key
        assert answer.status_code in (200, 503), answer.text
        return answer.json() if answer.status_code == 200 else None  # type: ignore[no-any-return]

    health: dict[str, Any] = wait_until(healthy, timeout=30, what="the queue health to be 200")
    assert health["healthy"] is True
    assert health["checks"]["postgres"]["ok"] and health["checks"]["redis"]["ok"]
    assert health["checks"]["postgres"]["latency_ms"] >= 0
    for queue in QUEUES:
        assert f"all@{HOST}" in health["workers"][queue]


def test_health_answers_from_a_state_refreshed_in_the_background(
    api_url: str, workers: WorkerProcess
) -> None:
    """Calls in a row get the same checked state, older each time: no call broadcasts to the
    workers or pings a dependency itself (it did, a second per call)."""
    answers = [requests.get(f"{api_url}/api/v1/queue/health", timeout=10).json() for _ in range(5)]
    snapshots = {
        tuple(sorted((name, check["latency_ms"]) for name, check in a["checks"].items())) for a in answers
    }
    assert len(snapshots) <= 2, answers  # at most one background refresh happened meanwhile
    ages = [answer["age_seconds"] for answer in answers]
    assert all(age is not None and age >= 0 for age in ages)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/queue/stats"),
        ("get", "/api/v1/queue/failed"),
        ("post", "/api/v1/queue/retry/00000000-0000-0000-0000-000000000000"),
        ("post", "/api/v1/queue/clean"),
        ("post", "/api/v1/queue/pause"),
        ("post", "/api/v1/queue/resume"),
    ],
)
def test_operations_need_an_admin_key(api_url: str, client: ApiClient, method: str, path: str) -> None:
    assert getattr(requests, method)(api_url + path, timeout=10).status_code == 401
    answer = getattr(client, method)(path)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"


def test_stats_count_outcomes_durations_and_workers(
    client: ApiClient, admin_client: ApiClient, workers: WorkerProcess, small_clip: Path
) -> None:
    job = client.wait_for_job(client.upload(small_clip).json()["id"])
    assert job["status"] == "succeeded"
    stats = admin_client.get("/api/v1/queue/stats").json()
    assert set(stats["queues"]) == set(QUEUES)
    video = stats["queues"]["video"]
    assert video["stage"] == "transcode"
    assert video["completed"]["day"] >= 1 and video["completed"]["hour"] >= 1
    assert video["mean_seconds"] > 0 and video["p95_seconds"] >= video["mean_seconds"] * 0.5
    assert video["waiting"] >= 0 and video["paused"] is False
    assert f"all@{HOST}" in video["workers"]
    assert stats["jobs"]["succeeded"] >= 1


def test_failed_job_is_listed_and_retried_from_the_failed_stage(
    client: ApiClient,
    other_client: ApiClient,
    admin_client: ApiClient,
    worker_pool: WorkerPool,
    small_clip: Path,
) -> None:
    # Transcodes fail on a worker whose ffmpeg gets too little memory to start; while the
    # default worker is away, that worker alone serves the video queue.
    worker_pool.stop_default()
    io = start_worker("retry-io", "fetch,upload,analyze,notify")
    starved = start_worker("starved", "video", env={"FFMPEG_MEMORY_LIMIT_BYTES": str(16 * 1024 * 1024)})
    try:
        ids = [client.upload(small_clip).json()["id"] for _ in range(2)]
        failed = [client.wait_for_job(job_id) for job_id in ids]
    finally:
        stop_worker(starved)
        stop_worker(io)
    worker_pool.ensure_default()
    for job in failed:
        assert job["status"] == "failed" and job["stage"] == "transcode", job
        assert stage(job, "transcode")["status"] == "failed"

    listed = admin_client.get("/api/v1/queue/failed", params={"limit": 50}).json()
    mine = {item["id"]: item for item in listed["jobs"] if item["id"] in ids}
    assert set(mine) == set(ids)
    for job in failed:
        listed_job = mine[job["id"]]
        assert listed_job["stage"] == "transcode" and listed_job["attempts"] >= 1
        assert listed_job["error"]["code"] == job["error"]["code"]
    assert listed["total"] >= 2

    fetched = stage(failed[0], "fetch")
    assert other_client.post(f"/api/v1/jobs/{ids[0]}/retry").status_code == 404
    by_owner = client.post(f"/api/v1/jobs/{ids[0]}/retry")
    by_admin = admin_client.post(f"/api/v1/queue/retry/{ids[1]}")
    for answer in (by_owner, by_admin):
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "running" and answer.json()["stage"] == "transcode"
        assert answer.json()["error"] is None

    for job_id in ids:
        job = client.wait_for_job(job_id)
        assert job["status"] == "succeeded", job
        # Attempt numbers go on (each names one attempt's outputs); the retry's is the second.
        assert stage(job, "transcode")["attempts"] == 2
    again = client.get(f"/api/v1/jobs/{ids[0]}").json()
    # fetch was not run again: its attempt and start time are those of the first run.
    assert stage(again, "fetch")["attempts"] == 1
    assert stage(again, "fetch")["started_at"] == fetched["started_at"]
    assert client.post(f"/api/v1/jobs/{ids[0]}/retry").status_code == 409


def test_clean_deletes_rows_and_workspace_and_outputs_only_when_asked(
    client: ApiClient, admin_client: ApiClient, workers: WorkerProcess, small_clip: Path
) -> None:
    settings = get_settings()
    s3 = make_s3_client(settings)

    def published(job_id: str) -> int:
        listing = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"{settings.s3_prefix}/{job_id}/")
        return int(listing.get("KeyCount", 0))

    kept = client.wait_for_job(client.upload(small_clip).json()["id"])["id"]
    workspace = open_workspace(settings)
    leftover = f"{job_prefix(uuid.UUID(kept))}analyze/9/leftover"
    with workspace.open_writer(leftover) as writer:
        writer.write(b"left behind")
    assert published(kept) > 0

    body = {"older_than_seconds": 0, "status": "succeeded", "limit": 1000}
    first = admin_client.post("/api/v1/queue/clean", json=body).json()
    assert kept in first["job_ids"] and first["deleted"] == len(first["job_ids"])
    assert first["outputs_deleted"] == 0
    assert client.get(f"/api/v1/jobs/{kept}").status_code == 404
    assert not workspace.exists(job_prefix(uuid.UUID(kept)))
    assert published(kept) > 0  # delivered outputs stay unless asked

    fresh = client.wait_for_job(client.upload(small_clip).json()["id"])["id"]
    second = admin_client.post("/api/v1/queue/clean", json=body | {"delete_outputs": True}).json()
    assert fresh in second["job_ids"]
    assert second["outputs_deleted"] >= 1
    assert published(fresh) == 0
    invalid = admin_client.post("/api/v1/queue/clean", json={"older_than_seconds": 0, "status": "running"})
    assert invalid.status_code == 400


def test_paused_queue_holds_jobs_until_resumed(
    client: ApiClient,
    admin_client: ApiClient,
    workers: WorkerProcess,
    sessions: sessionmaker[Session],
    small_clip: Path,
    video_resumed: None,
) -> None:
    extra = start_worker("video-extra", "video", concurrency=1)
    started_workers = [extra]
    try:
        paused = admin_client.post("/api/v1/queue/pause", json={"queue": "video"}).json()
        assert paused["paused"] is True
        assert set(paused["workers"]) == {f"all@{HOST}", f"video-extra@{HOST}"}

        job_id = client.upload(small_clip).json()["id"]

        def waiting_for_transcode() -> dict[str, object] | None:
            job: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}").json()
            return job if stage(job, "transcode")["status"] == "queued" else None

        job = wait_until(waiting_for_transcode, timeout=60, what="the job to reach the paused video queue")
        assert job["status"] == "running" and job["stage"] == "transcode"
        assert isinstance(job["position"], int) and job["position"] >= 1
        stats = admin_client.get("/api/v1/queue/stats").json()["queues"]["video"]
        assert stats["paused"] is True and stats["workers"] == [] and stats["waiting"] >= 1
        # Paused on purpose is not unhealthy (polled: the state is refreshed every few seconds,
        # and a loaded worker may miss one inspect).
        health = wait_until(
            lambda: (
                (answer := admin_client.get("/api/v1/queue/health").json())["healthy"]
                and answer["paused"] == ["video"]
                and answer
            ),
            timeout=30,
            what="health to see a worker on every queue but the paused one",
        )
        assert health["paused"] == ["video"]

        # A worker that starts during the pause honours it, and resumes with the others.
        late = start_worker("video-late", "video", concurrency=1)
        started_workers.append(late)
        wait_until(
            lambda: "queue paused by an operator" in late.log(), timeout=30, what="the late worker to pause"
        )
        assert stage(client.get(f"/api/v1/jobs/{job_id}").json(), "transcode")["status"] == "queued"

        resumed = admin_client.post("/api/v1/queue/resume", json={"queue": "video"}).json()
        assert set(resumed["workers"]) == {f"all@{HOST}", f"video-extra@{HOST}", f"video-late@{HOST}"}
        assert client.wait_for_job(job_id)["status"] == "succeeded"
        with sessions() as session:
            types = session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id)).all()
        assert "job.succeeded" in types
        assert admin_client.get("/api/v1/queue/stats").json()["queues"]["video"]["paused"] is False
    finally:
        for worker in started_workers:
            stop_worker(worker)
