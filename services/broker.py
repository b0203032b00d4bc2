"""What the Redis broker holds right now: which stage messages are waiting or being worked on.

The sweeper uses it to tell a stage whose message is merely waiting in a long queue from one
whose message was lost, so a backlog is never re-sent and a flushed Redis is noticed.
This reads kombu's Redis layout: one list per queue and priority step, and the `unacked`
hash of messages delivered to a worker but not yet acknowledged (including ETA retries).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import redis

PRIORITY_STEPS = (0, 3, 6, 9)
# kombu names a queue's priority lists "<queue>" (step 0) and "<queue>\x06\x16<step>".
PRIORITY_SEPARATOR = "\x06\x16"
UNACKED_KEY = "unacked"
TASK_PREFIX = "pipeline."
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def queue_keys(queue: str) -> list[str]:
    return [queue] + [f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS[1:]]


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
