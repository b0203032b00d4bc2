"""SIGTERM on a worker while another stands idle: the stage that outlives the grace period is
released, the idle worker takes it over at once while the old ffmpeg is still stopping, and
neither attempt touches the other's files, so the job succeeds on its second attempt."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import JobEvent, JobStage, StageAttempt
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


def attempts(sessions: sessionmaker[Session], job_id: str) -> list[StageAttempt]:
    with sessions() as session:
        return list(
            session.scalars(
                select(StageAttempt)
                .where(StageAttempt.job_id == uuid.UUID(job_id), StageAttempt.stage == "transcode")
                .order_by(StageAttempt.attempt)
            )
        )


def test_a_released_stage_is_taken_over_while_the_old_ffmpeg_still_stops(
    io_worker: WorkerProcess, client: ApiClient, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Long enough that the transcode is still far from done a grace period after its first
    # progress (which comes with its first complete segment).
    clip = make_clip(tmp_path / "long.mp4", width=1280, height=720, seconds=30)
    # Two video workers up before the job comes: whichever claims the transcode is told to
    # leave, and the other stands idle, ready to take over at once.
    env = {"SHUTDOWN_GRACE_SECONDS": "1"}
    pair = [start_worker(f"graceful-video-{n}", "video", concurrency=1, env=env) for n in (1, 2)]
    try:
        job_id = client.upload(clip, {"renditions": ["360p", "720p"]}).json()["id"]
        wait_until(
            lambda: transcode_row(sessions, job_id).progress > 0, timeout=60, what="the transcode under way"
        )
        owner = str(transcode_row(sessions, job_id).worker)
        leaving, successor = sorted(pair, key=lambda worker: not owner.startswith(f"{worker.name}@"))
        os.kill(leaving.proc.pid, signal.SIGTERM)  # the main process only, as `docker stop` does

        def taken_over() -> tuple[bool] | None:
            # Whether the old worker was still there when the successor's claim was first seen.
            return (leaving.proc.poll() is None,) if len(attempts(sessions, job_id)) == 2 else None

        (old_still_running,) = wait_until(taken_over, timeout=30, what="the successor's claim")
        wait_until(lambda: leaving.proc.poll() is not None, timeout=30, what="the worker to leave")
        job = client.wait_for_job(job_id, timeout=180)
    finally:
        for worker in pair:
            stop_worker(worker)
    assert "released stage on shutdown" in leaving.log()
    assert job["status"] == "succeeded", job
    transcode = next(stage for stage in job["stages"] if stage["name"] == "transcode")
    # The released attempt counts: a worker that crash-loops must use its attempts up.
    assert transcode["attempts"] == 2
    first, second = attempts(sessions, job_id)
    assert (first.outcome, second.outcome) == ("released", "succeeded")
    assert second.worker.startswith(f"{successor.name}@")
    assert first.body_finished_at is None  # the old attempt never ran to its end
    assert old_still_running
    with sessions() as session:
        released = session.scalars(
            select(JobEvent.type).where(
                JobEvent.job_id == uuid.UUID(job_id), JobEvent.type == "stage.released"
            )
        ).all()
    assert released == ["stage.released"]
    wait_until(lambda: not orphan_ffmpegs(), timeout=10, what="no ffmpeg left running")
