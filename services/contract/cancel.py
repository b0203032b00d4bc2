"""Cancel belongs to the contract: a request, a running stage that stops, a claim refused.

A job with no stage running under a live lease ends canceled at once; otherwise the running
stage's heartbeat sees the request within a second and ends the job. Every path holds the
job's lock, so the job reaches exactly one terminal state."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import Job, JobPart, JobStage, StageAttempt
from services.clock import DATABASE_CLOCK, Clock
from services.contract.records import (
    NOTIFY,
    Claim,
    Dispatch,
    JobState,
    Transition,
    end_attempt,
    lock_job,
    owned,
    queue_notification,
    record_event,
    work_of,
)


def live_stage_running(session: Session, job_id: uuid.UUID, clock: Clock) -> bool:
    """Whether a work stage or part of the job runs under a live lease (a worker that will
    answer, and end the job when it sees the cancel)."""
    stages = select(JobStage.id).where(
        JobStage.job_id == job_id,
        JobStage.name != NOTIFY,
        JobStage.status == "running",
        JobStage.lease_until >= clock.now(),
    )
    parts = select(JobPart.id).where(
        JobPart.job_id == job_id, JobPart.status == "running", JobPart.lease_until >= clock.now()
    )
    return bool(session.scalar(select(stages.exists() | parts.exists())))


def cancel_job(session: Session, job: JobState, stage: str | None, clock: Clock) -> list[Dispatch]:
    """End a job canceled: its unfinished work stages canceled or skipped, its attempts ended,
    the `job.canceled` event, and the webhook. The caller holds the job's lock."""
    now = clock.now()
    unfinished = ("queued", "running", "waiting")
    session.execute(
        update(JobStage)
        .where(JobStage.job_id == job.id, JobStage.name != NOTIFY, JobStage.status.in_(unfinished))
        .values(status="canceled", finished_at=now, lease_until=None, message_id=None, sent_at=None)
    )
    # Running parts stop at their next heartbeat: their rows are no longer theirs.
    session.execute(
        update(JobPart)
        .where(JobPart.job_id == job.id, JobPart.status.in_(unfinished))
        .values(status="canceled", finished_at=now, lease_until=None, message_id=None, sent_at=None)
    )
    session.execute(
        update(JobStage)
        .where(JobStage.job_id == job.id, JobStage.name != NOTIFY, JobStage.status == "pending")
        .values(status="skipped")
    )
    session.execute(
        update(StageAttempt)
        .where(StageAttempt.job_id == job.id, StageAttempt.stage != NOTIFY, StageAttempt.outcome == "running")
        .values(outcome="canceled", finished_at=now)
    )
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(
            status="canceled",
            error_code="canceled",
            error_message="The job was canceled.",
            finished_at=now,
            updated_at=now,
        )
    )
    record_event(session, job.id, "job.canceled", stage, status="canceled")
    return queue_notification(session, job, "canceled", clock)


def cancel_if_idle(session: Session, job: JobState, clock: Clock) -> Transition:
    """End a cancel-requested job now unless a stage of it runs under a live lease (that stage's
    heartbeat ends it within a second). The caller holds the job's lock."""
    if not job.live or live_stage_running(session, job.id, clock):
        return Transition(False)
    return Transition(True, canceled=True, dispatches=cancel_job(session, job, None, clock))


def request_cancel(session: Session, job_id: uuid.UUID, *, clock: Clock = DATABASE_CLOCK) -> Transition:
    """Ask a live job to stop; not applied when the job has already ended. A job with no stage
    running under a live lease ends at once (`canceled`); a running stage sees the flag at its
    next heartbeat, stops its work and ends the job."""
    job = lock_job(session, job_id)
    if job is None or not job.live:
        return Transition(False)
    session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True, updated_at=clock.now()))
    ended = cancel_if_idle(session, JobState(job.id, job.owner_id, job.status, True, job.options), clock)
    return Transition(True, canceled=ended.canceled, dispatches=ended.dispatches)


def finish_cancel(
    session: Session, claim: Claim, *, clock: Clock = DATABASE_CLOCK, body_finished: bool = False
) -> Transition:
    """A running stage stopped because its job was canceled: end the job canceled (and never run
    later stages). Not applied when the attempt is stale or the job was not canceled."""
    job = lock_job(session, claim.job_id)
    if job is None or not job.cancel_requested or not job.live:
        return Transition(False)
    ours = session.scalar(select(work_of(claim).id).where(owned(claim)))
    if ours is None:
        return Transition(False)
    if body_finished:
        end_attempt(session, claim, "canceled", clock, body_finished_at=clock.now())
    return Transition(True, canceled=True, dispatches=cancel_job(session, job, claim.stage, clock))
