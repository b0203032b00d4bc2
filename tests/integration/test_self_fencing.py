"""A worker cut off from PostgreSQL (the network holds every packet, connections stay open)
stops its work before its lease runs out, so no other worker that takes the stage over ever
races it. The partition is a real TCP relay in front of the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import JobStage, StageAttempt
from tests.conftest import TEST_DB
from tests.fixtures import HOST, ApiClient, WorkerProcess, start_worker, stop_worker, wait_until
from tests.media import make_long_flat_clip
from tests.processes import ffmpeg_for
from tests.throttle import Throttle, throttled

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_long_flat_clip(tmp_path_factory.mktemp("fencing"))


@pytest.fixture
def video_behind_a_partition(workers: WorkerProcess) -> Iterator[Throttle]:
    """The `video` queue served alone by a worker that reaches PostgreSQL through a relay."""
    from tasks import app

    shared = [f"{workers.name}@{HOST}"]
    with throttled(("127.0.0.1", 5432), 100 * 1024 * 1024) as link:
        app.control.cancel_consumer("video", destination=shared, reply=True)
        url = f"postgresql+psycopg://postgres@127.0.0.1:{link.port}/{TEST_DB}"
        worker = start_worker("partitioned", "video", concurrency=1, env={"DATABASE_URL": url})
        try:
            yield link
        finally:
            link.release()
            stop_worker(worker)
            app.control.add_consumer("video", destination=shared, reply=True)


def transcode(sessions: sessionmaker[Session], job_id: str) -> JobStage:
    with sessions() as session:
        return session.scalars(
            select(JobStage).where(JobStage.job_id == uuid.UUID(job_id), JobStage.name == "transcode")
        ).one()


def test_a_worker_cut_off_from_the_database_stops_before_its_lease_runs_out(
    video_behind_a_partition: Throttle, client: ApiClient, sessions: sessionmaker[Session], long_clip: Path
) -> None:
    job_id = client.upload(long_clip).json()["id"]
    wait_until(lambda: ffmpeg_for(f"{job_id}-transcode-"), timeout=60, what="the transcode's ffmpeg")
    wait_until(lambda: transcode(sessions, job_id).progress > 0, timeout=60, what="a renewal with progress")
    video_behind_a_partition.hold()
    lease_until = transcode(sessions, job_id).lease_until
    assert lease_until is not None
    wait_until(lambda: not ffmpeg_for(f"{job_id}-transcode-"), timeout=60, what="the cut-off worker to stop")
    stopped_at = datetime.now(UTC)
    # The last renewal that got through is the lease anyone else goes by.
    lease_until = transcode(sessions, job_id).lease_until
    assert lease_until is not None and stopped_at < lease_until, (stopped_at, lease_until)
    video_behind_a_partition.release()

    def recorded() -> str | None:
        with sessions() as session:
            return session.scalar(
                select(StageAttempt.error_code).where(
                    StageAttempt.job_id == uuid.UUID(job_id), StageAttempt.stage == "transcode"
                )
            )

    assert wait_until(recorded, timeout=60, what="the attempt to be recorded as stopped") == "lease_expired"
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
