"""kombu's Redis layout: one list per queue and priority step, holding JSON envelopes, and
the `unacked` hash of messages delivered to a worker but not yet acknowledged (including ETA
retries).

The sweeper reads it to tell a stage whose message is merely waiting in a long queue from one
whose message was lost, so a backlog is never re-sent and a flushed Redis is noticed. The API
writes it to send a stage without kombu's publishing machinery (see tasks.pipeline).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import redis

PRIORITY_STEPS = (0, 3, 6, 9)
# kombu names a queue's priority lists "<queue>" (step 0) and "<queue>\x06\x16<step>".
PRIORITY_SEPARATOR = "\x06\x16"
UNACKED_KEY = "unacked"
TASK_PREFIX = "pipeline."
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def priority_list(queue: str, priority: int) -> str:
    """The list holding `queue`'s messages of `priority`: kombu files a message under the
    highest step not above its priority, and step 0 under the queue's bare name."""
    step = max(step for step in PRIORITY_STEPS if step <= priority)
    return f"{queue}{PRIORITY_SEPARATOR}{step}" if step else queue


def queue_keys(queue: str) -> list[str]:
    return [priority_list(queue, step) for step in PRIORITY_STEPS]


def push_counting_ahead(client: redis.Redis, queue: str, priority: int, envelope: str) -> int:
    """LPUSH a message and return how many the broker will serve before it: those in the
    queue's higher-priority lists (workers pop those first) and those already in its own list
    (popped from the other end). One atomic round trip, whatever the length of the backlog."""
    own = priority_list(queue, priority)
    keys = queue_keys(queue)
    higher = keys[: keys.index(own)]
    with client.pipeline(transaction=True) as pipe:
        for key in higher:
            pipe.llen(key)
        pipe.lpush(own, envelope)
        *waiting, length = pipe.execute()
    return sum(int(n) for n in waiting) + int(length) - 1


def redis_envelope(
    headers: Mapping[str, Any], properties: Mapping[str, Any], body: Any, queue: str, priority: int
) -> str:
    """A Celery message as kombu's Redis transport stores it when published to `queue` through
    the default exchange: the JSON body base64-encoded inside a JSON envelope."""
    encoded = base64.b64encode(json.dumps(body).encode()).decode()
    return json.dumps(
        {
            "body": encoded,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": priority,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def stage_of_message(message: dict[str, Any]) -> tuple[str, str] | None:
    """(job_id, stage) of a Celery stage message, None for anything else."""
    headers = message.get("headers") or {}
    task = str(headers.get("task", ""))
    if not task.startswith(TASK_PREFIX):
        return None
    found = _UUID.search(str(headers.get("argsrepr", "")))
    return (found.group(0), task.removeprefix(TASK_PREFIX)) if found else None


def _decode(raw: bytes | str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    # An unacked entry is [message, exchange, routing_key]; a queued one is the message.
    if isinstance(value, list) and value and isinstance(value[0], dict):
        value = value[0]
    return value if isinstance(value, dict) else None


def stages_in_broker(client: redis.Redis, queues: Iterable[str]) -> set[tuple[str, str]]:
    """Every (job_id, stage) with a message waiting in `queues` or held unacked by a worker."""
    raw_messages: list[bytes | str] = []
    for queue in queues:
        for key in queue_keys(queue):
            raw_messages.extend(client.lrange(key, 0, -1))
    raw_messages.extend(client.hvals(UNACKED_KEY))
    found = set()
    for raw in raw_messages:
        message = _decode(raw)
        stage = stage_of_message(message) if message else None
        if stage is not None:
            found.add(stage)
    return found


def queue_depths(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    return {queue: sum(int(client.llen(key)) for key in queue_keys(queue)) for queue in queues}
