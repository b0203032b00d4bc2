"""A running stage's transitions: claim, renew, complete, requeue, fail, release.

Each is one UPDATE guarded by the owner (see records.owned): a stale attempt changes no row."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from models import Job, JobStage, StageAttempt
from services.clock import DATABASE_CLOCK, Clock
from services.contract.cancel import cancel_if_idle, finish_cancel
from services.contract.records import (
    FINISHED_STAGE_STATUSES,
    LAST_WORK_STAGE,
    NOTIFY,
    Claim,
    ClaimOutcome,
    Dispatch,
    Transition,
    end_attempt,
    fail_job,
    lock_job,
    next_stage,
    owned,
    queue_notification,
    queue_stage,
    record_event,
)
from services.errors import ConveyorError
from services.jobs import build_result


def _why_not_claimable(
    session: Session, job_id: uuid.UUID, stage: str, max_attempts: int, clock: Clock
) -> str:
    row = session.execute(
        select(
            JobStage.status,
            JobStage.attempts - JobStage.attempt_floor,
            JobStage.available_at > clock.now(),
        ).where(JobStage.job_id == job_id, JobStage.name == stage)
    ).one_or_none()
    if row is None:
        return "no_job"
    status, used, later = row
    if status in FINISHED_STAGE_STATUSES:
        return "finished"
    if status == "pending":
        return "not_reached"
    if used >= max_attempts:
        return "exhausted"
    return "not_due" if status == "queued" and later else "leased"


def claim_stage(
    session: Session,
    job_id: uuid.UUID,
    stage: str,
    *,
    worker: str,
    lease_seconds: float,
    max_attempts: int,
    clock: Clock = DATABASE_CLOCK,
) -> ClaimOutcome:
    """Take the stage if it is queued and due, or running under an expired lease, and has
    attempts left. A claim refused because the job was canceled ends the job canceled (when no
    other stage of it is still running): a canceled job is never left running."""
    job = lock_job(session, job_id)
    if job is None:
        return ClaimOutcome(None, "no_job")
    if stage != NOTIFY:
        if not job.live:
            return ClaimOutcome(None, "job_ended")
        if job.cancel_requested:
            return ClaimOutcome(None, "canceled", cancel_if_idle(session, job, clock).dispatches)
    now = clock.now()
    row = session.execute(
        update(JobStage)
        .where(
            JobStage.job_id == job_id,
            JobStage.name == stage,
            or_(
                and_(JobStage.status == "queued", JobStage.available_at <= now),
                and_(JobStage.status == "running", JobStage.lease_until < now),
            ),
            JobStage.attempts - JobStage.attempt_floor < max_attempts,
        )
        .values(
            status="running",
            attempts=JobStage.attempts + 1,
            worker=worker,
            lease_until=now + timedelta(seconds=lease_seconds),
            started_at=now,
            finished_at=None,
            progress=0.0,
            message_id=None,
            sent_at=None,
        )
        .returning(JobStage.attempts, JobStage.attempt_floor)
    ).one_or_none()
    if row is None:
        return ClaimOutcome(None, _why_not_claimable(session, job_id, stage, max_attempts, clock))
    attempt, floor = row
    # An attempt still marked running was taken over: its worker died or went silent.
    session.execute(
        update(StageAttempt)
        .where(StageAttempt.job_id == job_id, StageAttempt.stage == stage, StageAttempt.outcome == "running")
        .values(outcome="lost", finished_at=now)
    )
    session.add(StageAttempt(job_id=job_id, stage=stage, attempt=attempt, worker=worker, started_at=now))
    if stage != NOTIFY and job.status == "queued":
        session.execute(update(Job).where(Job.id == job_id).values(status="running", updated_at=now))
    record_event(session, job_id, "stage.started", stage, attempt=attempt, worker=worker)
    return ClaimOutcome(Claim(job_id, stage, attempt, worker, tries=attempt - floor))


def renew_lease(
    session: Session, claim: Claim, *, lease_seconds: float, progress: float, clock: Clock = DATABASE_CLOCK
) -> bool:
    """Extend the lease and record progress; False when the stage is no longer this attempt's.

    Progress also becomes a `stage.progress` event (what live clients follow) each time it
    crosses a whole point; the heartbeat calls this at most once a second, which bounds the
    event rate, and whole points bound the event count to about a hundred per attempt."""
    previous = session.scalar(select(JobStage.progress).where(owned(claim)).with_for_update())
    if previous is None:
        return False
    session.execute(
        update(JobStage)
        .where(owned(claim))
        .values(lease_until=clock.now() + timedelta(seconds=lease_seconds), progress=progress)
    )
    if int(progress) > int(previous):
        record_event(session, claim.job_id, "stage.progress", claim.stage, progress=round(progress, 1))
    return True


def cancel_requested(session: Session, job_id: uuid.UUID) -> bool:
    """The heartbeat's cheap question between renewals (a primary-key read)."""
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def stage_outputs(session: Session, job_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    rows = session.execute(
        select(JobStage.name, JobStage.output).where(
            JobStage.job_id == job_id, JobStage.status == "succeeded"
        )
    )
    return {name: output or {} for name, output in rows}


def complete_stage(
    session: Session, claim: Claim, output: dict[str, Any], *, clock: Clock = DATABASE_CLOCK
) -> Transition:
    """Record the stage's output and queue the next stage, in the caller's transaction.

    Checks for a cancel first: a job canceled while this stage ran ends canceled, and its
    output is never recorded. Not applied when the attempt is stale (another attempt owns
    the stage): the output is discarded, and nothing it wrote is read, since every attempt
    writes under its own attempt-scoped folder or key."""
    job = lock_job(session, claim.job_id)
    if job is None:
        return Transition(False)
    if claim.stage != NOTIFY and job.cancel_requested:
        ended = finish_cancel(session, claim, clock=clock, body_finished=True)
        return Transition(False, canceled=ended.canceled, dispatches=ended.dispatches)
    now = clock.now()
    done = session.execute(
        update(JobStage)
        .where(owned(claim))
        .values(status="succeeded", progress=100.0, output=output, finished_at=now, lease_until=None)
        .returning(JobStage.id)
    ).scalar_one_or_none()
    if done is None:
        end_attempt(session, claim, "discarded", clock, body_finished_at=now)
        return Transition(False)
    end_attempt(session, claim, "succeeded", clock, body_finished_at=now)
    record_event(session, claim.job_id, "stage.succeeded", claim.stage, attempt=claim.attempt)
    dispatches: list[Dispatch] = []
    if claim.stage == LAST_WORK_STAGE:
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(status="succeeded", result=build_result(stage_outputs(session, job.id)), finished_at=now)
        )
        record_event(session, job.id, "job.succeeded", None, status="succeeded")
        dispatches = queue_notification(session, job, clock)
    elif (following := next_stage(claim.stage)) is not None:
        queued = queue_stage(session, job, following, clock)
        dispatches = [queued] if queued else []
    session.execute(update(Job).where(Job.id == claim.job_id).values(updated_at=now))
    return Transition(True, dispatches=dispatches)


def requeue_stage(
    session: Session,
    claim: Claim,
    error: ConveyorError,
    *,
    delay_seconds: float,
    clock: Clock = DATABASE_CLOCK,
) -> bool:
    """A transient failure: give the stage back, claimable again once the delay has passed.

    No message is sent now (a delayed message would sit in some busy worker's prefetch): the
    sweeper sends it when `available_at` comes."""
    released = session.execute(
        update(JobStage)
        .where(owned(claim))
        .values(
            status="queued",
            lease_until=None,
            worker=None,
            available_at=clock.now() + timedelta(seconds=delay_seconds),
            message_id=None,
            sent_at=None,
            error_code=error.code,
            error_message=error.message,
        )
        .returning(JobStage.id)
    ).scalar_one_or_none()
    if released is None:
        return False
    end_attempt(session, claim, "retrying", clock, error_code=error.code)
    record_event(session, claim.job_id, "stage.retrying", claim.stage, code=error.code, delay=delay_seconds)
    return True


def fail_stage(
    session: Session, claim: Claim, code: str, message: str, *, clock: Clock = DATABASE_CLOCK
) -> Transition:
    """A permanent failure (or attempts used up): fail the stage and, while the job is live, the
    job with the same stable code, and queue the webhook that tells its owner."""
    job = lock_job(session, claim.job_id)
    failed = session.execute(
        update(JobStage)
        .where(owned(claim))
        .values(
            status="failed",
            error_code=code,
            error_message=message,
            finished_at=clock.now(),
            lease_until=None,
        )
        .returning(JobStage.id)
    ).scalar_one_or_none()
    if failed is None or job is None:
        return Transition(False)
    end_attempt(session, claim, "failed", clock, error_code=code)
    if claim.stage == NOTIFY or not job.live:
        return Transition(True)
    return Transition(True, dispatches=fail_job(session, job, claim.stage, code, message, clock))


def release_stage(session: Session, claim: Claim, *, clock: Clock = DATABASE_CLOCK) -> Dispatch | None:
    """Give a running stage back on shutdown so another worker takes it now, not after its lease
    expires. The attempt counts: a worker that crash-loops must use its attempts up. The old
    attempt's heartbeat then finds the stage gone and stops its work."""
    message_id = uuid.uuid4()
    released = session.execute(
        update(JobStage)
        .where(owned(claim))
        .values(
            status="queued",
            worker=None,
            lease_until=None,
            available_at=clock.now(),
            message_id=message_id,
            sent_at=None,
        )
        .returning(JobStage.id)
    ).scalar_one_or_none()
    if released is None:
        return None
    end_attempt(session, claim, "released", clock)
    record_event(session, claim.job_id, "stage.released", claim.stage, reason="worker_shutdown")
    priority = session.scalar(select(Job.options["priority"].astext).where(Job.id == claim.job_id))
    return Dispatch(claim.job_id, claim.stage, priority or "normal", message_id)


def record_stopped(session: Session, claim: Claim, reason: str, *, clock: Clock = DATABASE_CLOCK) -> None:
    """An attempt that stopped because it lost its stage (taken over, released, or its own lease
    ran out): only its own attempt record changes; the stage row belongs to someone else."""
    session.execute(
        update(StageAttempt)
        .where(
            StageAttempt.job_id == claim.job_id,
            StageAttempt.stage == claim.stage,
            StageAttempt.attempt == claim.attempt,
            StageAttempt.outcome == "running",
        )
        .values(outcome="lost", error_code=reason, finished_at=clock.now())
    )
