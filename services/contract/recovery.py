"""The sweeper: nothing is lost, and its cost follows what is due, not the backlog.

A stage is due to the sweeper when it is running under an expired lease (its worker died or
went silent), or queued with no message known to be on its way: never sent (a crash between
commit and send, the broker down at the time), waiting for its retry delay, or sent before
the broker lost its data. The broker's log of sends marks the rest (services.broker), so a
queued stage whose message waits in a backlog is in neither partial index the sweeper reads.

Each due stage is handled in a transaction of its own that locks the job, then the stage, as
every transition does; the messages are sent after each commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import redis
from sqlalchemy import CursorResult, Result, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from models import JobStage, StageAttempt
from services.broker import broker_lost_data, take_sent
from services.clock import DATABASE_CLOCK, Clock
from services.config import Settings
from services.contract.cancel import cancel_if_idle
from services.contract.records import (
    NOTIFY,
    Claim,
    Dispatch,
    fail_job,
    lock_job,
    max_attempts_for,
    record_event,
)
from services.contract.stages import release_stage

log = logging.getLogger("conveyor.sweeper")

# Stages handled per sweep of each kind; the rest wait for the next sweep (a few seconds).
SWEEP_BATCH = 500
# Log entries drained per round trip, and the most rounds one sweep spends draining.
DRAIN_BATCH = 5000
DRAIN_ROUNDS = 20


@dataclass
class SweepReport:
    forgotten: int = 0  # sends forgotten because the broker lost its data
    marked: int = 0  # stage rows marked sent from the broker's log
    redispatched: int = 0
    failed: int = 0
    canceled: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def _rows_changed(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def forget_sends(session: Session) -> int:
    """The broker lost its data: no queued stage's message can be trusted to exist."""
    return _rows_changed(
        session.execute(
            update(JobStage)
            .where(JobStage.status == "queued", JobStage.sent_at.is_not(None))
            .values(sent_at=None)
        )
    )


def mark_sent(session: Session, message_ids: list[uuid.UUID], clock: Clock = DATABASE_CLOCK) -> int:
    """Mark the queued stages whose current message the broker has (a stale id matches nothing)."""
    return _rows_changed(
        session.execute(
            update(JobStage)
            .where(
                JobStage.message_id.in_(message_ids), JobStage.status == "queued", JobStage.sent_at.is_(None)
            )
            .values(sent_at=clock.now())
        )
    )


def _expired(clock: Clock) -> ColumnElement[bool]:
    return and_(JobStage.status == "running", JobStage.lease_until < clock.now())


def _unsent(clock: Clock, grace: timedelta) -> ColumnElement[bool]:
    # A stage someone means to send (it has a message id) gets the grace to be sent and logged;
    # one only the sweeper sends (a retry) is due the moment its delay has passed.
    now = clock.now()
    return and_(
        JobStage.status == "queued",
        JobStage.sent_at.is_(None),
        or_(
            and_(JobStage.message_id.is_(None), JobStage.available_at <= now),
            JobStage.available_at <= now - grace,
        ),
    )


def due_stages(session: Session, clock: Clock, grace: timedelta, limit: int) -> list[tuple[uuid.UUID, str]]:
    """Expired leases first (a worker is gone), then unsent stages, oldest first."""
    expired = select(JobStage.job_id, JobStage.name).where(_expired(clock)).order_by(JobStage.lease_until)
    unsent = (
        select(JobStage.job_id, JobStage.name).where(_unsent(clock, grace)).order_by(JobStage.available_at)
    )
    return [
        (job_id, name) for query in (expired, unsent) for job_id, name in session.execute(query.limit(limit))
    ]


def recover_stage(
    session: Session, job_id: uuid.UUID, stage: str, settings: Settings, report: SweepReport, clock: Clock
) -> list[Dispatch]:
    """Handle one due stage, if it is still due once its job is locked."""
    grace = timedelta(seconds=settings.sweep_grace_seconds)
    job = lock_job(session, job_id)
    row = session.scalars(
        select(JobStage)
        .where(JobStage.job_id == job_id, JobStage.name == stage, or_(_expired(clock), _unsent(clock, grace)))
        .with_for_update()
    ).one_or_none()
    if job is None or row is None or (stage != NOTIFY and not job.live):
        return []
    if stage != NOTIFY and job.cancel_requested:
        ended = cancel_if_idle(session, job, clock)
        report.canceled += int(ended.canceled)
        return ended.dispatches
    lease_expired = row.status == "running"
    if lease_expired:
        session.execute(
            update(StageAttempt)
            .where(
                StageAttempt.job_id == job_id, StageAttempt.stage == stage, StageAttempt.outcome == "running"
            )
            .values(outcome="lost", error_code="lease_expired", finished_at=clock.now())
        )
        used = row.attempts - row.attempt_floor
        if used >= max_attempts_for(stage, settings):
            message = f"The {stage} stage's worker stopped answering {used} times; giving up."
            row.status, row.error_code, row.error_message = "failed", "worker_lost", message
            row.finished_at, row.lease_until = clock.now(), None
            report.failed += 1
            return [] if stage == NOTIFY else fail_job(session, job, stage, "worker_lost", message, clock)
    reason = "lease_expired" if lease_expired else "not_sent" if row.message_id else None
    row.status, row.worker, row.lease_until, row.sent_at = "queued", None, None, None
    row.message_id = uuid.uuid4()
    if lease_expired:
        row.available_at = clock.now()
    if reason:  # a retry whose delay has passed is expected, not an event
        record_event(session, job_id, "stage.redispatched", stage, reason=reason)
    report.redispatched += 1
    return [Dispatch(job_id, stage, job.priority, row.message_id)]


def sweep(
    sessions: sessionmaker[Session],
    broker: redis.Redis,
    settings: Settings,
    *,
    send: Callable[[Dispatch], object],
    clock: Clock = DATABASE_CLOCK,
    batch: int = SWEEP_BATCH,
) -> SweepReport:
    """One sweep: notice a broker that lost its data, mark what it was sent, then recover
    every due stage (sending its message after its own commit)."""
    report = SweepReport()
    if broker_lost_data(broker):
        with sessions.begin() as session:
            report.forgotten = forget_sends(session)
    for _ in range(DRAIN_ROUNDS):
        sent = take_sent(broker, DRAIN_BATCH)
        if sent:
            with sessions.begin() as session:
                report.marked += mark_sent(session, sent, clock)
        if len(sent) < DRAIN_BATCH:
            break
    with sessions() as session:
        due = due_stages(session, clock, timedelta(seconds=settings.sweep_grace_seconds), batch)
    for job_id, stage in due:
        with sessions.begin() as session:
            dispatches = recover_stage(session, job_id, stage, settings, report, clock)
        for dispatch in dispatches:
            send(dispatch)
    return report


def release_worker_stages(
    session: Session, worker_prefix: str, *, clock: Clock = DATABASE_CLOCK
) -> list[Dispatch]:
    """Give back every stage a shutting-down worker still runs (see release_stage)."""
    rows = session.execute(
        select(JobStage.job_id, JobStage.name, JobStage.attempts, JobStage.worker).where(
            JobStage.status == "running", JobStage.worker.startswith(worker_prefix, autoescape=True)
        )
    ).all()
    released = []
    for job_id, stage, attempt, worker in rows:
        dispatch = release_stage(session, Claim(job_id, stage, attempt, str(worker)), clock=clock)
        if dispatch is not None:
            released.append(dispatch)
    return released
