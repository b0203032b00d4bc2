"""Idempotency keys of submissions, and the counters /metrics reads."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, SmallInteger, String, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class IdempotencyKey(Base):
    """A submission's Idempotency-Key (Stripe's semantics): the same key and request within a
    day answer the job it made. The primary key is what makes concurrent duplicates safe."""

    __tablename__ = "idempotency_keys"

    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of the route and the request's content (services/idempotency.py).
    fingerprint: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MetricCount(Base):
    """Counters kept by triggers in the transactions that change what they count (jobs by
    status, stage durations; see the migration that creates this table) and by the webhook
    code: a scrape sums a few dozen rows whatever the number of jobs. Each database backend
    adds to its own shard, so concurrent writers do not queue on one row."""

    __tablename__ = "metric_counts"

    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    value: Mapped[float] = mapped_column(Float, server_default="0")
