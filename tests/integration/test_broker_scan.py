"""The sweeper's view of the broker, read from the real Redis: a waiting message is seen (so a
backlog is never re-sent), a lost one is not."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from models import JobStage
from services.apikeys import create_key
from services.broker import queue_depths, stages_in_broker
from services.config import get_settings
from services.jobs import create_job
from services.recovery import recover_lost_stages
from tasks.pipeline import dispatch
from tests.fixtures import WorkerPool

pytestmark = pytest.mark.integration

QUEUES = ("fetch", "video", "upload", "analyze", "notify")


@pytest.fixture
def broker(sessions: sessionmaker[Session], worker_pool: WorkerPool) -> redis.Redis:
    worker_pool.stop_default()  # nothing may consume the messages these tests count
    client = redis.Redis.from_url(get_settings().redis_url)
    client.flushdb()
    return client


def test_waiting_messages_are_seen_at_every_priority(broker: redis.Redis) -> None:
    jobs = {priority: uuid.uuid4() for priority in ("high", "normal", "low")}
    for priority, job_id in jobs.items():
        assert dispatch(job_id, "transcode", priority)
    assert stages_in_broker(broker, QUEUES) == {(str(job_id), "transcode") for job_id in jobs.values()}
    assert queue_depths(broker, QUEUES)["video"] == 3
    broker.flushdb()
    assert stages_in_broker(broker, QUEUES) == set()


def test_sweeper_leaves_a_backlog_alone_and_resends_what_was_lost(
    broker: redis.Redis, sessions: sessionmaker[Session]
) -> None:
    settings = get_settings()
    with sessions.begin() as session:
        owner, _ = create_key(session, "broker-scan")
        waiting, lost = (
            create_job(session, owner_id=owner.id, source={"url": url}, options={}).job.id
            for url in ("http://127.0.0.1/a", "http://127.0.0.1/b")
        )
        # Both have waited past the grace period; only one still has a message in Redis.
        session.execute(
            update(JobStage)
            .where(JobStage.job_id.in_([waiting, lost]), JobStage.name == "fetch")
            .values(available_at=JobStage.available_at - timedelta(hours=1))
        )
    assert dispatch(waiting, "fetch")
    in_broker = stages_in_broker(broker, QUEUES)
    with sessions.begin() as session:
        recovery = recover_lost_stages(session, settings, in_broker)
    resent = {(found.job_id, found.stage) for found in recovery.to_dispatch}
    assert (lost, "fetch") in resent
    assert (waiting, "fetch") not in resent
