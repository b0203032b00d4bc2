"""Queues are served fairly: a worker on several queues keeps transcoding behind a fetch
backlog, and recovery has a queue of its own that a fetch backlog or pause never holds up."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import ApiKey, JobEvent, StageAttempt
from services.apikeys import create_key
from services.contract import request_cancel
from services.jobs import create_job
from tests.fixtures import ApiClient, WorkerPool, WorkerProcess, start_worker, stop_worker, wait_until
from tests.local_http import running
from tests.media import make_clip

pytestmark = pytest.mark.integration

BACKLOG = 50


class SlowSource(ThreadingHTTPServer):
    """Serves one small clip, taking its time before each answer (a slow origin)."""

    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), SlowSourceHandler)
        self.body = body

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}.mp4"


class SlowSourceHandler(BaseHTTPRequestHandler):
    server: SlowSource

    def do_GET(self) -> None:
        time.sleep(0.3)  # the origin's latency, not synchronisation
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture
def no_default_worker(worker_pool: WorkerPool) -> Iterator[None]:
    worker_pool.stop_default()
    yield
    worker_pool.ensure_default()


def started(sessions: sessionmaker[Session], job_ids: list[str], stage: str) -> dict[str, float]:
    """When each job's first attempt at `stage` started (epoch seconds)."""
    with sessions() as session:
        rows = session.execute(
            select(StageAttempt.job_id, StageAttempt.started_at).where(
                StageAttempt.job_id.in_([uuid.UUID(i) for i in job_ids]),
                StageAttempt.stage == stage,
                StageAttempt.attempt == 1,
            )
        ).all()
    return {str(job_id): at.timestamp() for job_id, at in rows}


def test_a_worker_on_several_queues_transcodes_behind_a_fetch_backlog(
    no_default_worker: None, client: ApiClient, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", seconds=1)
    fetcher = start_worker("fetcher", "fetch", concurrency=1)
    try:
        ready = client.upload(clip, {"renditions": ["240p"]}).json()["id"]
        wait_until(
            lambda: client.get(f"/api/v1/jobs/{ready}").json()["stage"] == "transcode",
            timeout=60,
            what="a job waiting for its transcode",
        )
    finally:
        stop_worker(fetcher)
    with running(SlowSource(clip.read_bytes())) as source:
        backlog = [
            client.post("/api/v1/jobs", json={"source": {"url": source.url(f"b{i}")}}).json()["id"]
            for i in range(BACKLOG)
        ]
        both = start_worker("fetch-and-video", "fetch,video", concurrency=1)
        try:
            wait_until(lambda: started(sessions, [ready], "transcode"), timeout=60, what="the transcode")
            transcode_started = started(sessions, [ready], "transcode")[ready]
            fetches = started(sessions, backlog, "fetch")
        finally:
            stop_worker(both)
            for job_id in [ready, *backlog]:
                client.post(f"/api/v1/jobs/{job_id}/cancel")
    before = sum(1 for at in fetches.values() if at < transcode_started)
    # Served in turn, the transcode comes after a fetch or two, not after the whole backlog.
    assert before <= 3, f"{before} of {BACKLOG} fetches ran before the waiting transcode"


@pytest.fixture(scope="module")
def owner(sessions: sessionmaker[Session]) -> ApiKey:
    with sessions.begin() as session:
        key, _ = create_key(session, "fair-queues")
    return key


def test_a_paused_fetch_queue_does_not_stop_recovery(
    workers: WorkerProcess,
    admin_client: ApiClient,
    sessions: sessionmaker[Session],
    owner: ApiKey,
) -> None:
    assert admin_client.post("/api/v1/queue/pause", json={"queue": "fetch"}).json()["paused"] is True
    try:
        # A job committed whose message was never sent (the API died in between).
        with sessions.begin() as session:
            lost = create_job(session, owner_id=owner.id, source={"url": "http://127.0.0.1:9/x"}, options={})

        def redispatched() -> bool:
            with sessions() as session:
                return bool(
                    session.scalar(
                        select(JobEvent.id).where(
                            JobEvent.job_id == lost.job.id, JobEvent.type == "stage.redispatched"
                        )
                    )
                )

        wait_until(redispatched, timeout=60, what="the sweeper to send the lost stage")
    finally:
        assert admin_client.post("/api/v1/queue/resume", json={"queue": "fetch"}).json()["paused"] is False
    with sessions.begin() as session:
        request_cancel(session, lost.job.id)
