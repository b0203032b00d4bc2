"""Webhook endpoints of each tenant, the secrets that sign for them, and the messages sent.

A message is one event for one target (an endpoint, or a job's own `webhook_url`); its
attempts are rows of `webhook_deliveries`. A message waiting for its next attempt is due at
`next_attempt_at`, which a partial index keeps cheap to find however long the history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

# pending: waiting for next_attempt_at; sending: an attempt runs (next_attempt_at is its lease);
# delivered and failed (given up, or refused for good) are final until a redelivery.
MESSAGE_STATUSES: tuple[str, ...] = ("pending", "sending", "delivered", "failed")


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    # The event types sent here; NULL means every type.
    events: Mapped[list[str] | None] = mapped_column(ARRAY(String(64)))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookSecret(Base):
    """A signing secret, stored as the salt it is derived from (services/webhooks/secrets.py):
    the database alone does not hold a secret. An endpoint's secrets have its endpoint_id; a
    tenant's secret for its jobs' own webhook_url has none. A rotated secret keeps signing
    until expires_at."""

    __tablename__ = "webhook_secrets"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    salt: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_webhook_secrets_owner_id", "owner_id", "endpoint_id"),
        # One current job-webhook secret per tenant, so creating it lazily cannot race.
        Index(
            "uq_webhook_secrets_tenant_current",
            "owner_id",
            unique=True,
            postgresql_where=text("endpoint_id IS NULL AND expires_at IS NULL"),
        ),
    )


class WebhookMessage(Base):
    __tablename__ = "webhook_messages"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="SET NULL")
    )
    # "endpoint:<id>" or "webhook_url": one message per event and target.
    target: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    webhook_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    # The body, fixed when the event happened: a redelivery sends the same message.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    # Every attempt ever made (the fencing token of the one running now).
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Attempts failed since the last success or redelivery: the step of the retry schedule.
    failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Sent to the notify queue until then, so the dispatcher does not send it again meanwhile.
    dispatched_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("webhook_id", "target", name="uq_webhook_messages_webhook_id_target"),
        Index(
            "ix_webhook_messages_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'sending')"),
        ),
    )
