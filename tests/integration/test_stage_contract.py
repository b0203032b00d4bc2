"""The stage contract on the real PostgreSQL: one claim wins, leases expire, outputs queue the
next stage, and the sweeper finds what the broker lost."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models import ApiKey, JobStage
from services.apikeys import create_key
from services.config import get_settings
from services.errors import FetchFailed
from services.jobs import create_job, get_job, job_to_dict
from services.recovery import recover_lost_stages
from services.stages import (
    claim_stage,
    complete_stage,
    fail_stage,
    renew_lease,
    request_cancel,
    requeue_stage,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def owner(sessions: sessionmaker[Session]) -> ApiKey:
    with sessions.begin() as session:
        key, _ = create_key(session, "contract-tests")
    return key


@pytest.fixture
def job_id(sessions: sessionmaker[Session], owner: ApiKey) -> uuid.UUID:
    with sessions.begin() as session:
        job = create_job(session, owner_id=owner.id, source={"url": "http://127.0.0.1/x.mp4"}, options={})
        return job.job.id


def claim(sessions: sessionmaker[Session], job_id: uuid.UUID, stage: str = "fetch", worker: str = "w1"):  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        return claim_stage(session, job_id, stage, worker=worker, lease_seconds=30, max_attempts=3)


def stage_row(sessions: sessionmaker[Session], job_id: uuid.UUID, stage: str) -> JobStage:
    with sessions() as session:
        return session.scalars(
            select(JobStage).where(JobStage.job_id == job_id, JobStage.name == stage)
        ).one()


def expire_lease(sessions: sessionmaker[Session], job_id: uuid.UUID, stage: str) -> None:
    with sessions.begin() as session:
        session.execute(
            update(JobStage)
            .where(JobStage.job_id == job_id, JobStage.name == stage)
            .values(lease_until=JobStage.lease_until - timedelta(hours=1))
        )


def test_only_one_claim_wins_and_a_pending_stage_cannot_be_claimed(
    sessions: sessionmaker[Session], job_id: uuid.UUID
) -> None:
    first = claim(sessions, job_id)
    assert first is not None and first.attempt == 1
    assert claim(sessions, job_id, worker="w2") is None  # duplicate delivery while it runs
    assert claim(sessions, job_id, "transcode") is None  # not reached yet
    with sessions() as session:
        job = get_job(session, job_id)
        assert job is not None and job.status == "running"


def test_complete_records_output_and_queues_the_next_stage(
    sessions: sessionmaker[Session], job_id: uuid.UUID
) -> None:
    first = claim(sessions, job_id)
    assert first is not None
    with sessions.begin() as session:
        assert complete_stage(session, first, {"path": "jobs/x/source"})
    assert stage_row(sessions, job_id, "fetch").output == {"path": "jobs/x/source"}
    assert stage_row(sessions, job_id, "transcode").status == "queued"
    assert claim(sessions, job_id) is None  # finished: a redelivery does nothing
    assert claim(sessions, job_id, "transcode") is not None


def test_expired_lease_is_taken_over_and_the_old_owner_loses(
    sessions: sessionmaker[Session], job_id: uuid.UUID
) -> None:
    first = claim(sessions, job_id, worker="dead")
    assert first is not None
    expire_lease(sessions, job_id, "fetch")
    second = claim(sessions, job_id, worker="alive")
    assert second is not None and second.attempt == 2
    with sessions.begin() as session:
        assert not renew_lease(session, first, lease_seconds=30, progress=50)
        assert not complete_stage(session, first, {"from": "dead"})
        assert renew_lease(session, second, lease_seconds=30, progress=50)
        assert complete_stage(session, second, {"from": "alive"})
    assert stage_row(sessions, job_id, "fetch").output == {"from": "alive"}


def test_attempts_are_bounded(sessions: sessionmaker[Session], job_id: uuid.UUID) -> None:
    for attempt in (1, 2, 3):
        claimed = claim(sessions, job_id, worker=f"w{attempt}")
        assert claimed is not None and claimed.attempt == attempt
        expire_lease(sessions, job_id, "fetch")
    assert claim(sessions, job_id, worker="w4") is None


def test_transient_failure_requeues_and_permanent_failure_fails_the_job(
    sessions: sessionmaker[Session], job_id: uuid.UUID
) -> None:
    first = claim(sessions, job_id)
    assert first is not None
    with sessions.begin() as session:
        assert requeue_stage(session, first, FetchFailed("connection reset"), delay_seconds=0)
    row = stage_row(sessions, job_id, "fetch")
    assert (row.status, row.error_code) == ("queued", "fetch_failed")
    second = claim(sessions, job_id)
    assert second is not None and second.attempt == 2
    with sessions.begin() as session:
        assert fail_stage(session, job_id, "fetch", "invalid_media", "not a video")
    with sessions() as session:
        job = get_job(session, job_id)
        assert job is not None
        shown = job_to_dict(job)
    assert shown["status"] == "failed"
    assert shown["error"] == {"code": "invalid_media", "message": "not a video"}
    assert shown["stage"] == "fetch"
    assert stage_row(sessions, job_id, "notify").status == "skipped"  # no webhook_url


def test_sweeper_redispatches_lost_messages_and_dead_workers(
    sessions: sessionmaker[Session], job_id: uuid.UUID
) -> None:
    settings = get_settings()
    with sessions.begin() as session:
        # Nobody picked fetch up for longer than the grace period: the message was lost.
        session.execute(
            update(JobStage)
            .where(JobStage.job_id == job_id, JobStage.name == "fetch")
            .values(available_at=JobStage.available_at - timedelta(hours=1))
        )
        recovery = recover_lost_stages(session, settings, set())
    assert (job_id, "fetch") in [(lost.job_id, lost.stage) for lost in recovery.to_dispatch]

    claimed = claim(sessions, job_id, worker="about-to-die")
    assert claimed is not None
    expire_lease(sessions, job_id, "fetch")
    with sessions.begin() as session:
        recovery = recover_lost_stages(session, settings, set())
    assert (job_id, "fetch") in [(lost.job_id, lost.stage) for lost in recovery.to_dispatch]
    assert stage_row(sessions, job_id, "fetch").status == "queued"


def test_sweeper_gives_up_after_the_attempt_limit_with_worker_lost(
    sessions: sessionmaker[Session], job_id: uuid.UUID
) -> None:
    settings = get_settings()
    for attempt in range(settings.stage_max_attempts):
        assert claim(sessions, job_id, worker=f"w{attempt}") is not None
        expire_lease(sessions, job_id, "fetch")
        if attempt + 1 < settings.stage_max_attempts:
            with sessions.begin() as session:
                recover_lost_stages(session, settings, set())
    with sessions.begin() as session:
        recovery = recover_lost_stages(session, settings, set())
    assert (job_id, "fetch") in [(lost.job_id, lost.stage) for lost in recovery.failed]
    with sessions() as session:
        job = get_job(session, job_id)
        assert job is not None and (job.status, job.error_code) == ("failed", "worker_lost")


def test_cancel_of_a_queued_job_ends_it_at_once(sessions: sessionmaker[Session], job_id: uuid.UUID) -> None:
    with sessions.begin() as session:
        job = get_job(session, job_id)
        assert job is not None
        assert request_cancel(session, job)
    assert claim(sessions, job_id) is None
    with sessions() as session:
        job = get_job(session, job_id)
        assert job is not None and job.status == "canceled"
    assert [stage_row(sessions, job_id, s).status for s in ("fetch", "transcode")] == ["canceled", "skipped"]
