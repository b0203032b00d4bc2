"""The webhook that tells a job's owner how it ended, and the record of each delivery."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import JobEvent, WebhookDelivery
from services.webhooks import DeliveryResult

OUTCOME_EVENTS = ("job.succeeded", "job.failed", "job.canceled")


def outcome_event_id(session: Session, job_id: uuid.UUID) -> int:
    """The id of the event that ended the job: the identity of what the webhook announces."""
    event_id = session.scalar(
        select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id, JobEvent.type.in_(OUTCOME_EVENTS))
    )
    return int(event_id or 0)


def webhook_event(job: dict[str, Any], event_id: int) -> tuple[str, str, dict[str, Any]]:
    """(webhook-id, event type, payload) for the job's outcome. The id is stable per outcome
    event, so a receiver can drop a redelivery, and new when a retried job ends again."""
    event_type = f"job.{job['status']}"
    msg_id = f"msg_{uuid.UUID(job['id']).hex}_{event_id}"
    payload = {"type": event_type, "timestamp": datetime.now(UTC).isoformat(), "data": job}
    return msg_id, event_type, payload


def record_delivery(
    session: Session,
    *,
    job_id: uuid.UUID,
    msg_id: str,
    event_type: str,
    url: str,
    attempt: int,
    result: DeliveryResult,
) -> None:
    session.add(
        WebhookDelivery(
            job_id=job_id,
            webhook_id=msg_id,
            event_type=event_type,
            url=url,
            attempt=attempt,
            ok=result.ok,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
        )
    )
