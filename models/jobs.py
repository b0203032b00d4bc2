"""Jobs, their stages, their events and their webhook deliveries: the source of truth."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base

STAGE_NAMES: tuple[str, ...] = ("fetch", "transcode", "upload", "analyze", "notify")
JOB_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "canceled")
# pending: not reached yet; queued: may be claimed once available; the rest are what they say.
STAGE_STATUSES: tuple[str, ...] = (
    "pending",
    "queued",
    "running",
    "succeeded",
    "failed",
    "canceled",
    "skipped",
    "waiting",  # the transcode stage, while its parts run
)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Entitlements (services/entitlements.py): what the key's jobs may ask for and use.
    priorities: Mapped[list[str]] = mapped_column(
        ARRAY(String(16)), server_default=text("'{normal,low}'::varchar[]")
    )
    source_buckets: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'::text[]"))
    analysis_backends: Mapped[list[str]] = mapped_column(
        ARRAY(String(16)), server_default=text("'{local}'::varchar[]")
    )
    max_active_jobs: Mapped[int | None] = mapped_column(Integer)
    max_source_bytes_per_day: Mapped[int | None] = mapped_column(BigInteger)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    source: Mapped[dict[str, Any]] = mapped_column(JSONB)
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Part of every playback token (services/playback.py): raising it revokes the job's links.
    playback_revision: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # When the retention task removed the job's workspace objects; it looks only at ended jobs
    # where this is still null, so its cost follows what is due, not every job ever run.
    workspace_cleaned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    stages: Mapped[list[JobStage]] = relationship(
        back_populates="job", order_by="JobStage.position", cascade="all, delete-orphan", lazy="selectin"
    )
    parts: Mapped[list[JobPart]] = relationship(
        back_populates="job", order_by="JobPart.index", cascade="all, delete-orphan", lazy="selectin"
    )

    __table_args__ = (
        Index("ix_jobs_status_created_at", "status", "created_at"),
        # A key's jobs in the order its job list and its daily byte quota read them.
        Index("ix_jobs_owner_id_created_at", "owner_id", "created_at"),
        # A key's jobs that count against its concurrency quota.
        Index("ix_jobs_active_owner", "owner_id", postgresql_where=text("status IN ('queued', 'running')")),
        Index(
            "ix_jobs_workspace_due",
            "finished_at",
            postgresql_where=text(
                "workspace_cleaned_at IS NULL AND status IN ('succeeded', 'failed', 'canceled')"
            ),
        ),
    )


class LeasedWork:
    """What the stage contract keeps on every row a worker claims: a stage, or a part of one."""

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    # The job's priority as Redis serves it (0 high, 1 normal, 2 low), copied onto each row so
    # that counting a stage's place in line needs no join (and an index can answer it).
    priority_rank: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))
    # Attempts ever claimed: attempt n is the fencing token of the n-th claim, so it never
    # repeats, not even after an operator's retry (which raises attempt_floor instead).
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Attempts spent before the last operator retry; the stage may use STAGE_MAX_ATTEMPTS more.
    attempt_floor: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    progress: Mapped[float] = mapped_column(server_default=text("0"))
    worker: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When a queued stage may be claimed (now, or later for a retry with backoff).
    available_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The message meant to run the queued stage (its Celery task id), chosen before it is sent;
    # None when nobody sends it but the sweeper (a retry waiting for its available_at).
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # When the broker was known to hold that message (the sweeper reads the broker's log of
    # sends); a queued stage without it is due to the sweeper. Reset when the broker loses data.
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


def _sweeper_indexes(table: str) -> tuple[Index, ...]:
    """What the sweeper reads: queued rows no message is known to be on its way for, and
    leases. A backlog whose messages the broker holds is in neither index."""
    return (
        Index(
            f"ix_{table}_unsent",
            "available_at",
            postgresql_where=text("status = 'queued' AND sent_at IS NULL"),
        ),
        Index(f"ix_{table}_leases", "lease_until", postgresql_where=text("status = 'running'")),
        Index(f"ix_{table}_message_id", "message_id", postgresql_where=text("message_id IS NOT NULL")),
    )


class JobStage(LeasedWork, Base):
    __tablename__ = "job_stages"

    name: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer)
    # What one attempt hands on to the next (the Veo operation a fetch waits for); written only
    # by the running attempt (services.stage_state), kept across attempts and retries.
    resume_state: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    job: Mapped[Job] = relationship(back_populates="stages")

    __table_args__ = (
        UniqueConstraint("job_id", "name", name="uq_job_stages_job_id_name"),
        Index("ix_job_stages_status_available_at", "status", "available_at"),
        *_sweeper_indexes("job_stages"),
        # The line a queued stage waits in, in the order Redis serves it.
        Index(
            "ix_job_stages_line",
            "name",
            "priority_rank",
            "available_at",
            "id",
            postgresql_where=text("status = 'queued'"),
        ),
    )


class JobPart(LeasedWork, Base):
    """One part of a transcode: a span of the video (or the sound, encoded once) that any video
    host may take, under the same claim, lease, heartbeat and fencing as a stage. The part that
    completes last queues the transcode stage again, which stitches the parts."""

    __tablename__ = "job_parts"

    index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))  # video, or sound (every sound track, whole)
    # The span of the source it covers, from the stream's start: [start, end), end None for the
    # last part, which runs to the end of the stream whatever the container says.
    start_seconds: Mapped[float] = mapped_column(Float)
    end_seconds: Mapped[float | None] = mapped_column(Float)
    # Its planned length (the last part's from the probed duration): what its share of the
    # transcode's progress and its time limits follow.
    span_seconds: Mapped[float] = mapped_column(Float)
    first_segment: Mapped[int] = mapped_column(Integer)  # its first segment's number, in each rendition

    job: Mapped[Job] = relationship(back_populates="parts")

    __table_args__ = (
        UniqueConstraint("job_id", "index", name="uq_job_parts_job_id_index"),
        *_sweeper_indexes("job_parts"),
    )


class StageAttempt(Base):
    """One claim of a stage or of a part: who ran it, how it ended, and whether its body ran to
    the end (what "done twice" is counted from: a body can finish and still lose its lease)."""

    __tablename__ = "stage_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(16))
    part: Mapped[int | None] = mapped_column(Integer)  # the part's index; None for the stage itself
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(255))
    # running, succeeded, planned (the transcode's parts were made), retrying, failed,
    # canceled, released, lost, discarded
    outcome: Mapped[str] = mapped_column(String(16), server_default="running")
    error_code: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    body_finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "uq_stage_attempts_attempt",
            "job_id",
            "stage",
            "attempt",
            unique=True,
            postgresql_where=text("part IS NULL"),
        ),
        Index(
            "uq_stage_attempts_part_attempt",
            "job_id",
            "part",
            "attempt",
            unique=True,
            postgresql_where=text("part IS NOT NULL"),
        ),
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str | None] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    # A stream reads a job's events after the last one it sent: one index seek per read.
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)


class WebhookDelivery(Base):
    """One attempt at delivering a webhook message (models.webhooks.WebhookMessage)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("webhook_messages.id", ondelete="CASCADE"), index=True
    )
    webhook_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
