"""The broker as the real Redis holds it: what the API writes matches what Celery itself would
publish, the place in line counts what workers will pop first, and the sweeper's view sees a
waiting message (so a backlog is never re-sent) and not a lost one."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import timedelta
from typing import Any

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
from tasks import app
from tasks.pipeline import broker_priority, dispatch, stage_signature
from tests.conftest import REDIS_OWNER_KEY
from tests.fixtures import WorkerPool

pytestmark = pytest.mark.integration

QUEUES = ("fetch", "video", "upload", "analyze", "notify")


@pytest.fixture
def broker(sessions: sessionmaker[Session], worker_pool: WorkerPool) -> redis.Redis:
    worker_pool.stop_default()  # nothing may consume the messages these tests count
    client = redis.Redis.from_url(get_settings().redis_url)
    client.flushdb()
    client.set(REDIS_OWNER_KEY, os.getpid())
    return client


def test_waiting_messages_are_seen_at_every_priority(broker: redis.Redis) -> None:
    jobs = {priority: uuid.uuid4() for priority in ("high", "normal", "low")}
    for priority, job_id in jobs.items():
        assert dispatch(job_id, "transcode", priority) is not None
    assert stages_in_broker(broker, QUEUES) == {(str(job_id), "transcode") for job_id in jobs.values()}
    assert queue_depths(broker, QUEUES)["video"] == 3
    broker.flushdb()
    assert stages_in_broker(broker, QUEUES) == set()


def only_message(broker: redis.Redis) -> tuple[bytes, dict[str, Any]]:
    (key,) = [key for key in broker.keys("*") if not key.startswith((b"_kombu", REDIS_OWNER_KEY.encode()))]
    (raw,) = broker.lrange(key, 0, -1)
    broker.delete(key)
    return key, json.loads(raw)


def comparable(message: dict[str, Any]) -> dict[str, Any]:
    """The message without what differs between any two sends: ids, origin, tags."""
    headers = {k: v for k, v in message["headers"].items() if k not in ("id", "root_id", "origin")}
    varying = ("correlation_id", "delivery_tag", "reply_to")
    properties = {k: v for k, v in message["properties"].items() if k not in varying}
    args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
    return {**message, "headers": headers, "properties": properties, "body": [args, kwargs, embed]}


def test_sent_stages_match_what_celery_publishes(broker: redis.Redis) -> None:
    """The API writes stage messages to Redis itself (one LPUSH, not kombu's producer): the
    message must be the one Celery's own send_task would have published, in the same list."""
    job_id = uuid.uuid4()
    assert dispatch(job_id, "upload", "high") is not None
    ours_key, ours = only_message(broker)
    app.send_task(
        "pipeline.upload",
        args=(str(job_id),),
        priority=broker_priority("high"),
        chain=[stage_signature(job_id, stage, "high") for stage in ("notify", "analyze")],
        ignore_result=True,
    )
    celery_key, theirs = only_message(broker)
    assert ours_key == celery_key == b"upload"
    assert comparable(ours) == comparable(theirs)
    assert [link["task"] for link in comparable(ours)["body"][2]["chain"]] == [
        "pipeline.notify",
        "pipeline.analyze",
    ]


def test_place_in_line_counts_what_workers_pop_first(broker: redis.Redis) -> None:
    """Higher priorities are popped first, then each list in order of arrival."""
    assert dispatch(uuid.uuid4(), "fetch", "low") == 0
    assert dispatch(uuid.uuid4(), "fetch", "normal") == 0
    assert dispatch(uuid.uuid4(), "fetch", "high") == 0
    assert dispatch(uuid.uuid4(), "fetch", "normal") == 2  # the high one, then the first normal
    assert dispatch(uuid.uuid4(), "fetch", "low") == 4
    assert dispatch(uuid.uuid4(), "fetch", "high") == 1
    assert dispatch(uuid.uuid4(), "transcode", "normal") == 0  # another queue, another line
    assert queue_depths(broker, QUEUES) == {"fetch": 6, "video": 1, "upload": 0, "analyze": 0, "notify": 0}


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
    assert dispatch(waiting, "fetch") is not None
    in_broker = stages_in_broker(broker, QUEUES)
    with sessions.begin() as session:
        recovery = recover_lost_stages(session, settings, in_broker)
    resent = {(found.job_id, found.stage) for found in recovery.to_dispatch}
    assert (lost, "fetch") in resent
    assert (waiting, "fetch") not in resent
