"""Sending stages to the broker. PostgreSQL already holds the truth when this runs."""

from __future__ import annotations

import logging
import time
import uuid

from celery import chain
from celery.canvas import Signature
from kombu.exceptions import OperationalError

from models import STAGE_NAMES
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


def stage_chain(job_id: uuid.UUID, first_stage: str, priority: str = "normal") -> Signature:
    """The chain from first_stage to notify; each link takes job_id only and keeps the priority."""
    start = STAGE_NAMES.index(first_stage)
    return chain(*(stage_signature(job_id, stage, priority) for stage in STAGE_NAMES[start:]))


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


def dispatch(job_id: uuid.UUID, first_stage: str, priority: str = "normal") -> bool:
    """Send the chain; False when the broker is unreachable (the sweeper sends it later)."""
    if not breaker.is_open():
        log.warning("broker recently unreachable; the sweeper will dispatch", extra={"job_id": str(job_id)})
        return False
    try:
        stage_chain(job_id, first_stage, priority).apply_async(retry=False)
    except (OperationalError, OSError) as exc:
        breaker.tripped()
        log.warning(
            "broker unreachable; the sweeper will dispatch", extra={"job_id": str(job_id), "error": str(exc)}
        )
        return False
    return True
