"""kombu's Redis layout (one list per queue and priority step, holding JSON envelopes), and
the two keys of ours beside it that let the sweeper know what the broker holds without reading
it: the log of sends and the broker's epoch.

Every stage message goes out through `push_stage`, which appends its id to the log of sends in
the same MULTI as the LPUSH: a message is in the log exactly when it was queued. The sweeper
drains the log into PostgreSQL (the stage rows are marked sent), so its cost follows what was
sent since the last sweep, never the length of a backlog. The epoch is a random value the
sweeper writes once; when it is missing, the broker has lost its data (a FLUSHALL, a restart
without persistence) and every message marked sent must be sent again.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import redis

PRIORITY_STEPS = (0, 3, 6, 9)
# kombu names a queue's priority lists "<queue>" (step 0) and "<queue>\x06\x16<step>".
PRIORITY_SEPARATOR = "\x06\x16"
SENT_LOG_KEY = "conveyor:sent"
EPOCH_KEY = "conveyor:broker-epoch"
# The log is drained every sweep; if no sweeper runs for a long while, the oldest entries go
# (their stages are then sent once more, which the claim makes harmless) rather than memory.
SENT_LOG_MAX = 1_000_000


def priority_list(queue: str, priority: int) -> str:
    """The list holding `queue`'s messages of `priority`: kombu files a message under the
    highest step not above its priority, and step 0 under the queue's bare name."""
    step = max(step for step in PRIORITY_STEPS if step <= priority)
    return f"{queue}{PRIORITY_SEPARATOR}{step}" if step else queue


def queue_keys(queue: str) -> list[str]:
    return [priority_list(queue, step) for step in PRIORITY_STEPS]


def push_stage(client: redis.Redis, queue: str, priority: int, envelope: str, message_id: uuid.UUID) -> int:
    """LPUSH a message, log its id as sent, and return how many messages the broker will serve
    before it: those in the queue's higher-priority lists (workers pop those first) and those
    already in its own list (popped from the other end). One atomic round trip, whatever the
    length of the backlog."""
    own = priority_list(queue, priority)
    keys = queue_keys(queue)
    higher = keys[: keys.index(own)]
    with client.pipeline(transaction=True) as pipe:
        for key in higher:
            pipe.llen(key)
        pipe.lpush(own, envelope)
        pipe.rpush(SENT_LOG_KEY, str(message_id))
        pipe.ltrim(SENT_LOG_KEY, -SENT_LOG_MAX, -1)
        *waiting, length, _, _ = pipe.execute()
    return sum(int(n) for n in waiting) + int(length) - 1


def take_sent(client: redis.Redis, count: int) -> list[uuid.UUID]:
    """Remove and return up to `count` ids from the log of sends, oldest first (two sweepers
    never take the same id: LPOP is atomic)."""
    taken: list[bytes] = client.lpop(SENT_LOG_KEY, count) or []  # type: ignore[assignment]
    return [uuid.UUID(raw.decode()) for raw in taken]


def broker_lost_data(client: redis.Redis) -> bool:
    """True when the broker's epoch was missing (its data is gone: flushed, or restarted without
    persistence); a new epoch is written at once, so each loss is reported once."""
    return bool(client.set(EPOCH_KEY, uuid.uuid4().hex, nx=True))


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


def queue_depths(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    return {queue: sum(int(client.llen(key)) for key in queue_keys(queue)) for queue in queues}
