"""SIGTERM on a worker: a stage that outlives the grace period is released at once for
another worker (not left to an expiring lease), its ffmpeg stops, and the job still succeeds
with the released attempt not counted."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import JobEvent, JobStage
from tests.chaos import orphan_ffmpegs
from tests.fixtures import ApiClient, WorkerPool, WorkerProcess, start_worker, stop_worker, wait_until
from tests.media import make_clip

pytestmark = pytest.mark.integration


@pytest.fixture
def io_worker(worker_pool: WorkerPool) -> Iterator[WorkerProcess]:
    worker_pool.stop_default()
    worker = start_worker("graceful-io", "fetch,upload,analyze,notify,maintenance", beat=True)
    yield worker
    stop_worker(worker)


def transcode_row(sessions: sessionmaker[Session], job_id: str) -> JobStage:
    with sessions() as session:
        return session.scalars(
            select(JobStage).where(JobStage.job_id == uuid.UUID(job_id), JobStage.name == "transcode")
        ).one()


def test_sigterm_releases_a_long_stage_after_the_grace_period(
    io_worker: WorkerProcess, client: ApiClient, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Long enough that the transcode is still far from done a grace period after its first
    # progress (which comes with its first complete segment).
    clip = make_clip(tmp_path / "long.mp4", width=1280, height=720, seconds=30)
    leaving = start_worker("graceful-video-1", "video", concurrency=1, env={"SHUTDOWN_GRACE_SECONDS": "1"})
    job_id = client.upload(clip, {"renditions": ["360p", "720p"]}).json()["id"]
    wait_until(
        lambda: transcode_row(sessions, job_id).progress > 0, timeout=60, what="the transcode to be under way"
    )
    os.kill(leaving.proc.pid, signal.SIGTERM)  # the main process only, as `docker stop` does
    wait_until(lambda: leaving.proc.poll() is not None, timeout=30, what="the worker to leave")
    assert "released stage on shutdown" in leaving.log()
    wait_until(lambda: not orphan_ffmpegs(), timeout=10, what="its ffmpeg to stop")
    row = transcode_row(sessions, job_id)
    assert row.status == "queued" and row.worker is None

    successor = start_worker("graceful-video-2", "video", concurrency=1)
    try:
        job = client.wait_for_job(job_id, timeout=180)
    finally:
        stop_worker(successor)
    assert job["status"] == "succeeded", job
    transcode = next(stage for stage in job["stages"] if stage["name"] == "transcode")
    assert transcode["attempts"] == 2  # the released attempt counts: a crash-looping worker uses them up
    with sessions() as session:
        released = session.scalars(
            select(JobEvent.type).where(
                JobEvent.job_id == uuid.UUID(job_id), JobEvent.type == "stage.released"
            )
        ).all()
    assert released == ["stage.released"]
