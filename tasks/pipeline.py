"""Sending stages to the broker. PostgreSQL already holds the truth when this runs: every
message is a `Dispatch` a committed transition returned, carrying the message id its stage
row names."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from functools import cache

import redis
from celery.canvas import Signature
from redis.backoff import NoBackoff
from redis.retry import Retry

from celeryconfig import STAGE_QUEUES
from models import STAGE_NAMES
from services.broker import push_stage, redis_envelope
from services.config import get_settings
from services.contract import Dispatch
from services.queue_stats import priority_rank
from tasks import app

log = logging.getLogger(__name__)


def broker_priority(priority: str) -> int:
    """Redis serves lower numbers first; kombu's priority steps are 0, 3, 6, 9, one per rank."""
    return 3 * priority_rank(priority)


def stage_signature(job_id: uuid.UUID, stage: str, priority: str = "normal") -> Signature:
    return app.signature(
        f"pipeline.{stage}", args=(str(job_id),), immutable=True, priority=broker_priority(priority)
    )


@cache
def broker_client() -> redis.Redis:
    # The same connect and read timeouts as Celery's own publishing (celeryconfig), and one
    # immediate retry: a pooled connection may predate a Redis restart.
    timeout = app.conf.broker_connection_timeout
    return redis.Redis.from_url(
        app.conf.broker_url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
    )


def part_task_name(stage: str) -> str:
    return f"pipeline.{stage}_part"


def send_stages(dispatch: Dispatch) -> int:
    """Send the dispatched stage with the stages after it embedded as its chain, as
    `celery.chain` would: each link takes job_id only and keeps the priority. A part of a
    stage goes alone, to its stage's queue.

    Celery builds the message (protocol 2), with the message id the stage row names as its
    task id; it goes to Redis as one LPUSH in kombu's layout, logged as sent in the same
    round trip (services.broker.push_stage), rather than through kombu's producer, whose
    generic publishing path cost a third of a submission's CPU. Every stage message goes out
    this way, the links a worker sends after a stage included (tasks.base), so the sweeper
    knows of each one. Returns how many messages the broker will serve before this one.
    """
    job_id, priority = dispatch.job_id, dispatch.priority
    first, *rest = STAGE_NAMES[STAGE_NAMES.index(dispatch.stage) :]
    level = broker_priority(priority)
    if dispatch.part_id is not None:
        # A part: its row's id only, no chain (the last part to finish queues the stitch), and
        # time limits that follow its length.
        soft, hard = get_settings().part_time_limits(dispatch.part_seconds or 0.0)
        message = app.amqp.create_task_message(
            str(dispatch.message_id),
            part_task_name(first),
            (str(dispatch.part_id),),
            soft_time_limit=soft,
            time_limit=hard,
            ignore_result=app.conf.task_ignore_result,
        )
    else:
        message = app.amqp.create_task_message(
            str(dispatch.message_id),
            f"pipeline.{first}",
            (str(job_id),),
            # Celery pops the next link from the end of the list.
            chain=[stage_signature(job_id, stage, priority) for stage in reversed(rest)],
            ignore_result=app.conf.task_ignore_result,
        )
    queue = STAGE_QUEUES[first]
    envelope = redis_envelope(message.headers, message.properties, message.body, queue, level)
    return push_stage(broker_client(), queue, level, envelope, dispatch.message_id)


class BrokerBreaker:
    """After a failed send, skip sending for a few seconds: during a broker outage each request
    would otherwise wait out a connection timeout, and the sweeper sends those jobs anyway."""

    def __init__(self, pause_seconds: float = 5.0) -> None:
        self.pause_seconds = pause_seconds
        self.closed_until = 0.0

    def is_open(self) -> bool:
        return time.monotonic() >= self.closed_until

    def tripped(self) -> None:
        self.closed_until = time.monotonic() + self.pause_seconds


breaker = BrokerBreaker()


def dispatch(sent: Dispatch) -> int | None:
    """Send the chain and return how many messages are ahead of it in the broker; None when
    the broker is unreachable (its stage row stays unsent, and the sweeper sends it later)."""
    where = {"job_id": str(sent.job_id), "stage": sent.stage}
    if not breaker.is_open():
        log.warning("broker recently unreachable; the sweeper will dispatch", extra=where)
        return None
    try:
        return send_stages(sent)
    except (redis.RedisError, OSError) as exc:
        breaker.tripped()
        log.warning("broker unreachable; the sweeper will dispatch", extra=where | {"error": str(exc)})
        return None


def dispatch_all(dispatches: Iterable[Dispatch]) -> None:
    for sent in dispatches:
        dispatch(sent)
