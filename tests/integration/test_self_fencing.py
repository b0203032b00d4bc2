"""A worker cut off from PostgreSQL (the network holds every packet, connections stay open)
stops its work (a part of a transcode) before its lease runs out, so no other worker that takes
the part over ever races it. The partition is a real TCP relay in front of the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import JobPart, StageAttempt
from tests.conftest import TEST_DB
from tests.fixtures import ApiClient, WorkerProcess, queue_taken_off, start_worker, stop_worker, wait_until
from tests.media import make_long_flat_clip
from tests.processes import ffmpeg_for
from tests.throttle import Throttle, throttled

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_long_flat_clip(tmp_path_factory.mktemp("fencing"), seconds=7200)


@pytest.fixture
def video_behind_a_partition(workers: WorkerProcess) -> Iterator[Throttle]:
    """The `video` queue served alone by a worker that reaches PostgreSQL through a relay."""
    with throttled(("127.0.0.1", 5432), 100 * 1024 * 1024) as link, queue_taken_off("video", workers.name):
        url = f"postgresql+psycopg://postgres@127.0.0.1:{link.port}/{TEST_DB}"
        # Two parts of an hour each: a part runs far longer than the lease the test outwaits.
        env = {"DATABASE_URL": url, "PART_SECONDS": "3600"}
        worker = start_worker("partitioned", "video", concurrency=1, env=env)
        try:
            yield link
        finally:
            link.release()
            stop_worker(worker)


def running_part(sessions: sessionmaker[Session], job_id: str, index: int | None = None) -> JobPart | None:
    """The transcode's part that runs, or part `index`."""
    with sessions() as session:
        query = select(JobPart).where(JobPart.job_id == uuid.UUID(job_id)).order_by(JobPart.index)
        if index is None:
            query = query.where(JobPart.status == "running", JobPart.progress > 0)
        else:
            query = query.where(JobPart.index == index)
        return session.scalars(query.limit(1)).first()


def test_a_worker_cut_off_from_the_database_stops_before_its_lease_runs_out(
    video_behind_a_partition: Throttle, client: ApiClient, sessions: sessionmaker[Session], long_clip: Path
) -> None:
    job_id = client.upload(long_clip).json()["id"]
    wait_until(lambda: ffmpeg_for(f"{job_id}-transcode-"), timeout=60, what="the transcode's ffmpeg")
    part = wait_until(lambda: running_part(sessions, job_id), timeout=60, what="a renewal with progress")
    video_behind_a_partition.hold()
    assert part.lease_until is not None
    wait_until(lambda: not ffmpeg_for(f"{job_id}-transcode-"), timeout=60, what="the cut-off worker to stop")
    stopped_at = datetime.now(UTC)
    # The last renewal that got through is the lease anyone else goes by.
    held = running_part(sessions, job_id, part.index)
    assert held is not None and held.lease_until is not None
    assert stopped_at < held.lease_until, (stopped_at, held.lease_until)
    video_behind_a_partition.release()

    def recorded() -> str | None:
        with sessions() as session:
            return session.scalar(
                select(StageAttempt.error_code).where(
                    StageAttempt.job_id == uuid.UUID(job_id),
                    StageAttempt.stage == "transcode",
                    StageAttempt.part == part.index,
                    StageAttempt.error_code.is_not(None),
                )
            )

    stopped = wait_until(recorded, timeout=60, what="the part's attempt to be recorded as stopped")
    assert stopped == "lease_expired"
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
