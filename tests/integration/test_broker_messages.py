"""The broker as the real Redis holds it: what we write matches what Celery itself would
publish, every send is logged in the same round trip, and the place in line counts what
workers will pop first."""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

import pytest
import redis

from services.broker import SENT_LOG_KEY, queue_depths, take_sent
from services.config import get_settings
from services.contract import Dispatch
from tasks import app
from tasks.pipeline import broker_priority, dispatch, stage_signature
from tests.conftest import REDIS_OWNER_KEY
from tests.fixtures import WorkerPool

pytestmark = pytest.mark.integration

QUEUES = ("fetch", "video", "upload", "analyze", "notify")


@pytest.fixture
def broker(worker_pool: WorkerPool) -> redis.Redis:
    worker_pool.stop_default()  # nothing may consume the messages these tests count
    client = redis.Redis.from_url(get_settings().redis_url)
    client.flushdb()
    client.set(REDIS_OWNER_KEY, os.getpid())
    return client


def send(stage: str, priority: str = "normal") -> tuple[Dispatch, int | None]:
    sent = Dispatch(uuid.uuid4(), stage, priority, uuid.uuid4())
    return sent, dispatch(sent)


def only_message(broker: redis.Redis) -> tuple[bytes, dict[str, Any]]:
    ours = (b"_kombu", b"conveyor:")
    (key,) = [key for key in broker.keys("*") if not key.startswith(ours)]
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
    """Stage messages are written to Redis by us (one LPUSH, not kombu's producer): the message
    must be the one Celery's own send_task would have published, in the same list, with the
    message id the stage row names as its task id."""
    sent, _ = send("upload", "high")
    ours_key, ours = only_message(broker)
    assert ours["headers"]["id"] == str(sent.message_id)
    app.send_task(
        "pipeline.upload",
        args=(str(sent.job_id),),
        priority=broker_priority("high"),
        chain=[stage_signature(sent.job_id, stage, "high") for stage in ("notify", "analyze")],
        ignore_result=True,
    )
    celery_key, theirs = only_message(broker)
    assert ours_key == celery_key == b"upload"
    assert comparable(ours) == comparable(theirs)
    assert [link["task"] for link in comparable(ours)["body"][2]["chain"]] == [
        "pipeline.notify",
        "pipeline.analyze",
    ]


def test_every_send_is_logged_with_its_message_id(broker: redis.Redis) -> None:
    sent = [send(stage)[0] for stage in ("fetch", "transcode", "notify")]
    assert take_sent(broker, 10) == [s.message_id for s in sent]
    assert broker.llen(SENT_LOG_KEY) == 0
    assert queue_depths(broker, QUEUES) == {"fetch": 1, "video": 1, "upload": 0, "analyze": 0, "notify": 1}


def test_place_in_line_counts_what_workers_pop_first(broker: redis.Redis) -> None:
    """Higher priorities are popped first, then each list in order of arrival."""
    assert send("fetch", "low")[1] == 0
    assert send("fetch", "normal")[1] == 0
    assert send("fetch", "high")[1] == 0
    assert send("fetch", "normal")[1] == 2  # the high one, then the first normal
    assert send("fetch", "low")[1] == 4
    assert send("fetch", "high")[1] == 1
    assert send("transcode", "normal")[1] == 0  # another queue, another line
    assert queue_depths(broker, QUEUES) == {"fetch": 6, "video": 1, "upload": 0, "analyze": 0, "notify": 0}
