"""Asking the Celery workers what they consume, and telling them to stop or start a queue.

Broadcast control commands go through the broker to every worker; replies come back within
a short timeout, so a dead or busy worker costs the caller at most that long. Each call opens
a broker connection of its own: a pooled one may predate a Redis restart and fail once, and
these calls are rare (health checks, pause and resume)."""

from __future__ import annotations

import logging

import redis
from kombu.exceptions import OperationalError

from api.errors import ApiError
from tasks import app

log = logging.getLogger("conveyor.api")

# An inspect broadcast always waits this long (it cannot know how many workers exist); a
# loaded worker may need most of a second to answer.
REPLY_SECONDS = 1.0
# Pausing must find every consumer (one missed keeps serving the queue), so it waits longer.
PAUSE_REPLY_SECONDS = 3.0
BROKER_ERRORS = (OperationalError, OSError, redis.RedisError)


def consumers_by_worker(timeout: float = REPLY_SECONDS) -> dict[str, list[str]]:
    """worker name -> the queues it consumes now ({} when no worker answers or Redis is down)."""
    try:
        with app.connection_for_write() as connection:
            replies = app.control.inspect(timeout=timeout, connection=connection).active_queues() or {}
    except BROKER_ERRORS:
        log.warning("could not ask the workers for their queues", exc_info=True)
        return {}
    return {worker: sorted(queue["name"] for queue in queues or []) for worker, queues in replies.items()}


def workers_by_queue(queues: list[str], consumers: dict[str, list[str]]) -> dict[str, list[str]]:
    return {queue: sorted(w for w, consumed in consumers.items() if queue in consumed) for queue in queues}


def _broadcast(command: str, queue: str, workers: list[str]) -> list[str]:
    """Send a consumer command to exactly these workers; the workers that confirmed."""
    if not workers:
        return []
    try:
        with app.connection_for_write() as connection:
            replies = app.control.broadcast(
                command,
                arguments={"queue": queue},
                destination=workers,
                reply=True,
                timeout=PAUSE_REPLY_SECONDS,
                connection=connection,
            )
    except BROKER_ERRORS as exc:
        raise ApiError("unavailable", f"The broker did not take the command: {exc}") from exc
    return sorted(name for reply in replies or [] for name in reply)


def stop_consuming(queue: str, workers: list[str]) -> list[str]:
    """Tell these workers to stop taking messages from `queue`; the workers that confirmed.

    Tasks they already run finish; messages stay in the broker for when the queue resumes."""
    return _broadcast("cancel_consumer", queue, workers)


def start_consuming(queue: str, workers: list[str]) -> list[str]:
    return _broadcast("add_consumer", queue, workers)
