"""Webhook messages in PostgreSQL: one per event and target, retried on a schedule.

A message is `pending` until its `next_attempt_at`; an attempt claims it with one guarded
UPDATE (pending and due, or sending under an expired lease → sending, attempts + 1, lease in
next_attempt_at), so a duplicate task claims nothing. The attempt's outcome is written
fenced on that attempt number: delivered; failed for good (a refusal another attempt would
meet again, or the schedule used up); or pending again after the schedule's next delay.
Nothing waits in Celery: a periodic task sends what is due, found through a partial index
on next_attempt_at, so its cost follows the due rows, never the history."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import JobEvent, WebhookDelivery, WebhookEndpoint, WebhookMessage
from services.webhooks.sending import DeliveryResult

OUTCOME_EVENTS = ("job.succeeded", "job.failed", "job.canceled")
JOB_URL_TARGET = "webhook_url"
IN_FLIGHT = ("pending", "sending")
# A retry lands within ±JITTER of its scheduled delay, so receivers that failed together do
# not get their retries all at once.
JITTER = 0.2


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


def _subscribed(event_type: str) -> Any:
    return or_(WebhookEndpoint.events.is_(None), WebhookEndpoint.events.any_() == event_type)


def has_webhook_targets(
    session: Session, *, owner_id: uuid.UUID, options: dict[str, Any], outcome: str
) -> bool:
    """Whether a job's outcome (succeeded, failed, canceled) has anyone to tell: its own
    webhook_url, or an endpoint of its tenant subscribed to the outcome's type."""
    if options.get("webhook_url"):
        return True
    subscribed = select(WebhookEndpoint.id).where(
        WebhookEndpoint.owner_id == owner_id, _subscribed(f"job.{outcome}")
    )
    return bool(session.scalar(select(subscribed.exists())))


def create_messages(
    session: Session, *, job: dict[str, Any], owner_id: uuid.UUID, webhook_url: str | None, event_id: int
) -> list[int]:
    """One pending message per target of the job's outcome, due now; the ids of all of them
    (a notify stage that runs again finds the ones its earlier attempt made)."""
    msg_id, event_type, payload = webhook_event(job, event_id)
    targets: list[tuple[uuid.UUID | None, str, str]] = [
        (endpoint.id, f"endpoint:{endpoint.id}", endpoint.url)
        for endpoint in session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.owner_id == owner_id, _subscribed(event_type))
        )
    ]
    if webhook_url:
        targets.append((None, JOB_URL_TARGET, webhook_url))
    job_id = uuid.UUID(job["id"])
    for endpoint_id, target, url in targets:
        session.execute(
            insert(WebhookMessage)
            .values(
                job_id=job_id,
                owner_id=owner_id,
                endpoint_id=endpoint_id,
                target=target,
                url=url,
                webhook_id=msg_id,
                event_type=event_type,
                payload=payload,
                status="pending",
                next_attempt_at=func.now(),
            )
            .on_conflict_do_nothing(constraint="uq_webhook_messages_webhook_id_target")
        )
    return list(
        session.scalars(
            select(WebhookMessage.id).where(WebhookMessage.webhook_id == msg_id).order_by(WebhookMessage.id)
        )
    )


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    attempt: int
    job_id: uuid.UUID
    owner_id: uuid.UUID
    endpoint_id: uuid.UUID | None
    target: str
    url: str
    webhook_id: str
    event_type: str
    payload: dict[str, Any]


def claim_message(session: Session, message_id: int, *, lease_seconds: float) -> ClaimedMessage | None:
    """Take the message for one attempt if it is due; None if it is not ours to send."""
    due = or_(
        and_(WebhookMessage.status == "pending", WebhookMessage.next_attempt_at <= func.now()),
        and_(WebhookMessage.status == "sending", WebhookMessage.next_attempt_at < func.now()),
    )
    row = session.execute(
        update(WebhookMessage)
        .where(WebhookMessage.id == message_id, due)
        .values(
            status="sending",
            attempts=WebhookMessage.attempts + 1,
            next_attempt_at=func.now() + timedelta(seconds=lease_seconds),
            dispatched_until=None,
        )
        .returning(
            WebhookMessage.attempts,
            WebhookMessage.job_id,
            WebhookMessage.owner_id,
            WebhookMessage.endpoint_id,
            WebhookMessage.target,
            WebhookMessage.url,
            WebhookMessage.webhook_id,
            WebhookMessage.event_type,
            WebhookMessage.payload,
        )
    ).one_or_none()
    if row is None:
        return None
    return ClaimedMessage(message_id, *row)


def retry_delay(schedule: Sequence[float], failures: int) -> float | None:
    """Seconds before the retry after `failures` failed attempts in a row, jittered; None once
    the schedule is used up."""
    if failures > len(schedule):
        return None
    return float(schedule[failures - 1]) * random.uniform(1 - JITTER, 1 + JITTER)


def record_attempt(
    session: Session, claimed: ClaimedMessage, result: DeliveryResult, schedule: Sequence[float]
) -> str:
    """Log the attempt and move the message on; returns what became of it (delivered, failed,
    pending, or stale when another attempt or a deletion took the message meanwhile)."""
    session.add(
        WebhookDelivery(
            job_id=claimed.job_id,
            message_id=claimed.id,
            webhook_id=claimed.webhook_id,
            event_type=claimed.event_type,
            url=claimed.url,
            attempt=claimed.attempt,
            ok=result.ok,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
        )
    )
    session.execute(
        select(func.conveyor_count("webhook_attempts", "delivered" if result.ok else "failed", 1))
    )
    mine = and_(
        WebhookMessage.id == claimed.id,
        WebhookMessage.status == "sending",
        WebhookMessage.attempts == claimed.attempt,
    )
    if result.ok:
        values: dict[str, Any] = {
            "status": "delivered",
            "failures": 0,
            "next_attempt_at": None,
            "last_error": None,
        }
    else:
        failures = 1 + (session.scalar(select(WebhookMessage.failures).where(mine)) or 0)
        delay = retry_delay(schedule, failures) if result.retryable else None
        values = {"failures": failures, "last_error": result.error}
        if delay is None:
            values |= {"status": "failed", "next_attempt_at": None}
        else:
            values |= {"status": "pending", "next_attempt_at": func.now() + timedelta(seconds=delay)}
    moved = session.execute(
        update(WebhookMessage).where(mine).values(**values).returning(WebhookMessage.status)
    )
    status = moved.scalar_one_or_none()
    return status or "stale"


def take_due_messages(session: Session, *, limit: int, dispatch_grace_seconds: float) -> list[int]:
    """Messages due for an attempt (or whose attempt's lease ran out), marked as sent for the
    grace period so the next sweep does not send them again while they wait in the queue."""
    due = (
        select(WebhookMessage.id)
        .where(
            WebhookMessage.status.in_(IN_FLIGHT),
            WebhookMessage.next_attempt_at <= func.now(),
            or_(WebhookMessage.dispatched_until.is_(None), WebhookMessage.dispatched_until < func.now()),
        )
        .order_by(WebhookMessage.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(
        session.scalars(
            update(WebhookMessage)
            .where(WebhookMessage.id.in_(due.scalar_subquery()))
            .values(dispatched_until=func.now() + timedelta(seconds=dispatch_grace_seconds))
            .returning(WebhookMessage.id)
        )
    )


def redeliver_messages(session: Session, job_id: uuid.UUID, message_id: int | None) -> list[int]:
    """Make the job's messages (or one of them) due now with a fresh retry schedule; a message
    whose attempt is running is left to it. Returns the ids made due."""
    where = [WebhookMessage.job_id == job_id, WebhookMessage.status != "sending"]
    if message_id is not None:
        where.append(WebhookMessage.id == message_id)
    return list(
        session.scalars(
            update(WebhookMessage)
            .where(*where)
            .values(status="pending", failures=0, next_attempt_at=func.now(), dispatched_until=None)
            .returning(WebhookMessage.id)
        )
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_messages(session: Session, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """The job's messages, oldest first, each with its attempts."""
    messages = session.scalars(
        select(WebhookMessage).where(WebhookMessage.job_id == job_id).order_by(WebhookMessage.id)
    ).all()
    attempts: dict[int, list[dict[str, Any]]] = {message.id: [] for message in messages}
    for delivery in session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.message_id.in_(list(attempts)))
        .order_by(WebhookDelivery.id)
    ):
        attempts[delivery.message_id or 0].append(
            {
                "attempt": delivery.attempt,
                "ok": delivery.ok,
                "status_code": delivery.status_code,
                "error": delivery.error,
                "duration_ms": delivery.duration_ms,
                "created_at": delivery.created_at.isoformat(),
            }
        )
    return [
        {
            "id": message.id,
            "webhook_id": message.webhook_id,
            "event_type": message.event_type,
            "endpoint_id": str(message.endpoint_id) if message.endpoint_id else None,
            "url": message.url,
            "status": message.status,
            "attempts": attempts[message.id],
            "next_attempt_at": _iso(message.next_attempt_at) if message.status == "pending" else None,
            "last_error": message.last_error,
            "created_at": message.created_at.isoformat(),
        }
        for message in messages
    ]
