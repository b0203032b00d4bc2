"""A tenant's webhook endpoints: where each of its jobs' events goes."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from models import WebhookEndpoint, WebhookMessage
from services.errors import ConveyorError
from services.webhooks.secrets import add_secret

EVENT_TYPES = ("job.succeeded", "job.failed", "job.canceled")
# Each event is sent to every endpoint of its tenant: the fan-out per event is bounded.
MAX_ENDPOINTS_PER_KEY = 20


def endpoint_to_dict(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "events": endpoint.events,
        "created_at": endpoint.created_at.isoformat(),
    }


def create_endpoint(
    session: Session, owner_id: uuid.UUID, url: str, events: list[str] | None
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and the salt of its first secret (the caller shows the secret once)."""
    count = session.scalar(select(func.count()).where(WebhookEndpoint.owner_id == owner_id)) or 0
    if count >= MAX_ENDPOINTS_PER_KEY:
        raise ConveyorError(
            f"A key may have at most {MAX_ENDPOINTS_PER_KEY} webhook endpoints; delete one first.",
            code="conflict",
        )
    endpoint = WebhookEndpoint(owner_id=owner_id, url=url, events=events)
    session.add(endpoint)
    session.flush()
    session.refresh(endpoint)
    return endpoint, add_secret(session, owner_id, endpoint.id).salt


def list_endpoints(session: Session, owner_id: uuid.UUID) -> list[WebhookEndpoint]:
    return list(
        session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.owner_id == owner_id)
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
    )


def owned_endpoint(session: Session, owner_id: uuid.UUID, endpoint_id: str) -> WebhookEndpoint:
    """The caller's endpoint; not_found for an unknown id or another tenant's."""
    try:
        parsed = uuid.UUID(endpoint_id)
    except ValueError:
        parsed = None
    endpoint = session.get(WebhookEndpoint, parsed) if parsed else None
    if endpoint is None or endpoint.owner_id != owner_id:
        raise ConveyorError(f"No webhook endpoint {endpoint_id}.", code="not_found")
    return endpoint


def delete_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    """Remove the endpoint and its secrets; what it had not received yet is not sent."""
    session.execute(
        update(WebhookMessage)
        .where(WebhookMessage.endpoint_id == endpoint.id, WebhookMessage.status.in_(("pending", "sending")))
        .values(status="failed", next_attempt_at=None, last_error="the endpoint was deleted")
    )
    session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id))
