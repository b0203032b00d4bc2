"""Which queues an operator paused, and on which workers, kept in Redis beside the broker.

Celery's cancel_consumer lives only in each worker's memory; this record is what lets stats
show a paused queue, and resume restart exactly the workers the pause stopped."""

from __future__ import annotations

import json

import redis

# queue -> JSON list of the workers that stopped consuming it, so resume restarts exactly
# those (a worker that never served the queue must not start serving it on resume).
PAUSED_KEY = "conveyor:paused-queues"
TIMEOUT_SECONDS = 2.0


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT_SECONDS, socket_timeout=TIMEOUT_SECONDS)


def mark_paused(client: redis.Redis, queue: str, workers: list[str]) -> list[str]:
    """Remember that `workers` stopped consuming `queue` (adding to any earlier pause of it);
    returns every worker the queue is paused on."""
    merged = sorted(set(paused_queues(client).get(queue, [])) | set(workers))
    client.hset(PAUSED_KEY, queue, json.dumps(merged))
    return merged


def take_paused(client: redis.Redis, queue: str) -> list[str] | None:
    """Forget the pause of `queue`; the workers it was paused on, or None if it was not paused."""
    pipe = client.pipeline(transaction=True)
    pipe.hget(PAUSED_KEY, queue)
    pipe.hdel(PAUSED_KEY, queue)
    raw, _ = pipe.execute()
    return None if raw is None else list(json.loads(raw))


def paused_queues(client: redis.Redis) -> dict[str, list[str]]:
    return {
        (name.decode() if isinstance(name, bytes) else str(name)): list(json.loads(value))
        for name, value in client.hgetall(PAUSED_KEY).items()
    }
