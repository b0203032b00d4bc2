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

from models import JobPart, JobStage, LeasedWork, StageAttempt
from services.broker import broker_lost_data, take_sent
from services.clock import DATABASE_CLOCK, Clock
from services.config import Settings
from services.contract.cancel import cancel_if_idle
from services.contract.parts import fail_parts_stage
from services.contract.records import (
    NOTIFY,
    TRANSCODE,
    Claim,
    Dispatch,
    claimed_row,
    dispatch_of,
    fail_job,
    lock_job,
    max_attempts_for,
    record_event,
    work_of,
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


WORK = (JobStage, JobPart)


def forget_sends(session: Session) -> int:
    """The broker lost its data: no queued stage's or part's message can be trusted to exist."""
    return sum(
        _rows_changed(
            session.execute(
                update(work).where(work.status == "queued", work.sent_at.is_not(None)).values(sent_at=None)
            )
        )
        for work in WORK
    )


def mark_sent(session: Session, message_ids: list[uuid.UUID], clock: Clock = DATABASE_CLOCK) -> int:
    """Mark the queued stages and parts whose current message the broker has (a stale id
    matches nothing)."""
    return sum(
        _rows_changed(
            session.execute(
                update(work)
                .where(work.message_id.in_(message_ids), work.status == "queued", work.sent_at.is_(None))
                .values(sent_at=clock.now())
            )
        )
        for work in WORK
    )


def _expired(work: type[JobStage] | type[JobPart], clock: Clock) -> ColumnElement[bool]:
    return and_(work.status == "running", work.lease_until < clock.now())


def _unsent(work: type[JobStage] | type[JobPart], clock: Clock, grace: timedelta) -> ColumnElement[bool]:
    # A row someone means to send (it has a message id) gets the grace to be sent and logged;
    # one only the sweeper sends (a retry) is due the moment its delay has passed.
    now = clock.now()
    return and_(
        work.status == "queued",
        work.sent_at.is_(None),
        or_(
            and_(work.message_id.is_(None), work.available_at <= now),
            work.available_at <= now - grace,
        ),
    )


def due_work(session: Session, clock: Clock, grace: timedelta, limit: int) -> list[Claim]:
    """Expired leases first (a worker is gone), then unsent rows, oldest first: stages, then
    parts. Each as a probe naming its row (no attempt: not a claim of anything)."""
    found = [
        Claim(job_id, name, 0, "sweeper")
        for query in (
            select(JobStage.job_id, JobStage.name)
            .where(_expired(JobStage, clock))
            .order_by(JobStage.lease_until),
            select(JobStage.job_id, JobStage.name)
            .where(_unsent(JobStage, clock, grace))
            .order_by(JobStage.available_at),
        )
        for job_id, name in session.execute(query.limit(limit))
    ]
    found += [
        Claim(job_id, TRANSCODE, 0, "sweeper", part=index)
        for query in (
            select(JobPart.job_id, JobPart.index)
            .where(_expired(JobPart, clock))
            .order_by(JobPart.lease_until),
            select(JobPart.job_id, JobPart.index)
            .where(_unsent(JobPart, clock, grace))
            .order_by(JobPart.available_at),
        )
        for job_id, index in session.execute(query.limit(limit))
    ]
    return found


def recover(
    session: Session, probe: Claim, settings: Settings, report: SweepReport, clock: Clock
) -> list[Dispatch]:
    """Handle one due stage or part, if it is still due once its job is locked."""
    grace = timedelta(seconds=settings.sweep_grace_seconds)
    work, stage = work_of(probe), probe.stage
    job = lock_job(session, probe.job_id)
    row = cast(
        LeasedWork | None,
        session.scalars(
            select(work)
            .where(claimed_row(probe), or_(_expired(work, clock), _unsent(work, clock, grace)))
            .with_for_update()
        ).one_or_none(),
    )
    if job is None or row is None or (stage != NOTIFY and not job.live):
        return []
    if stage != NOTIFY and job.cancel_requested:
        ended = cancel_if_idle(session, job, clock)
        report.canceled += int(ended.canceled)
        return ended.dispatches
    lease_expired = row.status == "running"
    if lease_expired:
        same = StageAttempt.part.is_(None) if probe.part is None else StageAttempt.part == probe.part
        session.execute(
            update(StageAttempt)
            .where(
                StageAttempt.job_id == job.id,
                StageAttempt.stage == stage,
                same,
                StageAttempt.outcome == "running",
            )
            .values(outcome="lost", error_code="lease_expired", finished_at=clock.now())
        )
        used = row.attempts - row.attempt_floor
        if used >= max_attempts_for(stage, settings):
            what = stage if probe.part is None else f"{stage} part {probe.part}"
            message = f"The {what}'s worker stopped answering {used} times; giving up."
            row.status, row.error_code, row.error_message = "failed", "worker_lost", message
            row.finished_at, row.lease_until = clock.now(), None
            report.failed += 1
            if stage == NOTIFY:
                return []
            if probe.part is not None:
                fail_parts_stage(session, job.id, "worker_lost", message, clock)
            return fail_job(session, job, stage, "worker_lost", message, clock)
    reason = "lease_expired" if lease_expired else "not_sent" if row.message_id else None
    row.status, row.worker, row.lease_until, row.sent_at = "queued", None, None, None
    row.message_id = uuid.uuid4()
    if lease_expired:
        row.available_at = clock.now()
    if reason:  # a retry whose delay has passed is expected, not an event
        record_event(session, job.id, "stage.redispatched", stage, reason=reason, part=probe.part)
    report.redispatched += 1
    session.flush()
    return [dispatch_of(session, work, row.id)]


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
    every due stage and part (sending its message after its own commit)."""
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
        due = due_work(session, clock, timedelta(seconds=settings.sweep_grace_seconds), batch)
    for probe in due:
        with sessions.begin() as session:
            dispatches = recover(session, probe, settings, report, clock)
        for dispatch in dispatches:
            send(dispatch)
    return report


def release_worker_stages(
    session: Session, worker_prefix: str, *, clock: Clock = DATABASE_CLOCK
) -> list[Dispatch]:
    """Give back every stage and part a shutting-down worker still runs (see release_stage)."""
    running = [
        Claim(job_id, stage, attempt, str(worker))
        for job_id, stage, attempt, worker in session.execute(
            select(JobStage.job_id, JobStage.name, JobStage.attempts, JobStage.worker).where(
                JobStage.status == "running", JobStage.worker.startswith(worker_prefix, autoescape=True)
            )
        )
    ]
    running += [
        Claim(job_id, TRANSCODE, attempt, str(worker), part=index)
        for job_id, index, attempt, worker in session.execute(
            select(JobPart.job_id, JobPart.index, JobPart.attempts, JobPart.worker).where(
                JobPart.status == "running", JobPart.worker.startswith(worker_prefix, autoescape=True)
            )
        )
    ]
    released = []
    for claim in running:
        dispatch = release_stage(session, claim, clock=clock)
        if dispatch is not None:
            released.append(dispatch)
    return released
