"""The stage contract on the database: claim, heartbeat, complete, retry, fail.

Every transition is one guarded UPDATE, so a redelivered message, a second worker or a
sweeper racing a slow worker can never move a stage twice. PostgreSQL decides; the broker
only delivers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, true, update
from sqlalchemy.orm import Session

from models import STAGE_NAMES, Job, JobEvent, JobStage
from services.config import Settings
from services.errors import ConveyorError
from services.jobs import build_result
from services.webhooks.messages import has_webhook_targets

ACTIVE_JOB_STATUSES = ("queued", "running")
LAST_WORK_STAGE = "analyze"


@dataclass(frozen=True)
class Claim:
    """Proof that this worker owns one attempt of one stage."""

    job_id: uuid.UUID
    stage: str
    attempt: int
    worker: str


def next_stage(stage: str) -> str | None:
    position = STAGE_NAMES.index(stage)
    return STAGE_NAMES[position + 1] if position + 1 < len(STAGE_NAMES) else None


def _owned(claim: Claim) -> Any:
    return and_(
        JobStage.job_id == claim.job_id,
        JobStage.name == claim.stage,
        JobStage.status == "running",
        JobStage.worker == claim.worker,
        JobStage.attempts == claim.attempt,
    )


def record_event(session: Session, job_id: uuid.UUID, type_: str, stage: str | None, **data: Any) -> None:
    session.add(JobEvent(job_id=job_id, type=type_, stage=stage, data=data))


def claim_stage(
    session: Session, job_id: uuid.UUID, stage: str, *, worker: str, lease_seconds: float, max_attempts: int
) -> Claim | None:
    """Take the stage if it is queued, or running under an expired lease; None if not ours to run."""
    lease = timedelta(seconds=lease_seconds)
    live_job = (
        select(Job.id)
        .where(Job.id == job_id, Job.status.in_(ACTIVE_JOB_STATUSES), Job.cancel_requested.is_(False))
        .exists()
    )
    # notify delivers the outcome of a job that has already ended, so it needs no live job.
    job_guard = live_job if stage != "notify" else true()
    attempt = session.execute(
        update(JobStage)
        .where(
            JobStage.job_id == job_id,
            JobStage.name == stage,
            or_(
                JobStage.status == "queued",
                and_(JobStage.status == "running", JobStage.lease_until < func.now()),
            ),
            JobStage.attempts < max_attempts,
            job_guard,
        )
        .values(
            status="running",
            attempts=JobStage.attempts + 1,
            worker=worker,
            lease_until=func.now() + lease,
            started_at=func.now(),
            finished_at=None,
            progress=0.0,
        )
        .returning(JobStage.attempts)
    ).scalar_one_or_none()
    if attempt is None:
        return None
    if stage != "notify":
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="running", updated_at=func.now())
        )
    record_event(session, job_id, "stage.started", stage, attempt=attempt, worker=worker)
    return Claim(job_id=job_id, stage=stage, attempt=attempt, worker=worker)


def renew_lease(session: Session, claim: Claim, *, lease_seconds: float, progress: float) -> bool:
    """Extend the lease and record progress. False when the stage is no longer ours or the
    job was canceled: the caller must stop its work.

    Progress also becomes a `stage.progress` event (what live clients follow) each time it
    crosses a whole point; the heartbeat calls this at most once a second, which bounds the
    event rate, and whole points bound the event count to about a hundred per attempt."""
    previous = session.scalar(select(JobStage.progress).where(_owned(claim)))
    renewed = session.execute(
        update(JobStage)
        .where(_owned(claim))
        .values(lease_until=func.now() + timedelta(seconds=lease_seconds), progress=progress)
        .returning(JobStage.id)
    ).scalar_one_or_none()
    if renewed is None:
        return False
    if previous is not None and int(progress) > int(previous):
        record_event(session, claim.job_id, "stage.progress", claim.stage, progress=round(progress, 1))
    canceled = session.scalar(select(Job.cancel_requested).where(Job.id == claim.job_id))
    return not canceled


def stage_outputs(session: Session, job_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    rows = session.execute(
        select(JobStage.name, JobStage.output).where(
            JobStage.job_id == job_id, JobStage.status == "succeeded"
        )
    )
    return {name: output or {} for name, output in rows}


def _queue(session: Session, job_id: uuid.UUID, stage: str) -> None:
    session.execute(
        update(JobStage)
        .where(JobStage.job_id == job_id, JobStage.name == stage, JobStage.status == "pending")
        .values(status="queued", available_at=func.now())
    )


def _skip(session: Session, job_id: uuid.UUID, stage: str) -> None:
    session.execute(
        update(JobStage)
        .where(JobStage.job_id == job_id, JobStage.name == stage, JobStage.status.in_(("pending", "queued")))
        .values(status="skipped", finished_at=func.now())
    )


def _queue_notification(session: Session, job: Job) -> None:
    if has_webhook_targets(session, job):
        _queue(session, job.id, "notify")
    else:
        _skip(session, job.id, "notify")


def complete_stage(session: Session, claim: Claim, output: dict[str, Any]) -> bool:
    """Record the stage's output and queue the next one, in the caller's transaction.

    False when the lease was lost meanwhile (another attempt owns the stage): the work is
    discarded, which is safe because every stage's outputs are idempotent.
    """
    done = session.execute(
        update(JobStage)
        .where(_owned(claim))
        .values(status="succeeded", progress=100.0, output=output, finished_at=func.now(), lease_until=None)
        .returning(JobStage.id)
    ).scalar_one_or_none()
    if done is None:
        return False
    record_event(session, claim.job_id, "stage.succeeded", claim.stage, attempt=claim.attempt)
    if claim.stage == LAST_WORK_STAGE:
        job = session.get_one(Job, claim.job_id, with_for_update=True)
        job.status = "succeeded"
        job.result = build_result(stage_outputs(session, claim.job_id))
        job.finished_at = func.now()
        record_event(session, job.id, "job.succeeded", None, status="succeeded")
        _queue_notification(session, job)
    else:
        following = next_stage(claim.stage)
        if following is not None:
            _queue(session, claim.job_id, following)
    session.execute(update(Job).where(Job.id == claim.job_id).values(updated_at=func.now()))
    return True


def requeue_stage(session: Session, claim: Claim, error: ConveyorError, *, delay_seconds: float) -> bool:
    """A transient failure: give the stage back to the queue, claimable again after the delay."""
    released = session.execute(
        update(JobStage)
        .where(_owned(claim))
        .values(
            status="queued",
            lease_until=None,
            worker=None,
            available_at=func.now() + timedelta(seconds=delay_seconds),
            error_code=error.code,
            error_message=error.message,
        )
        .returning(JobStage.id)
    ).scalar_one_or_none()
    if released is not None:
        record_event(
            session, claim.job_id, "stage.retrying", claim.stage, code=error.code, delay=delay_seconds
        )
    return released is not None


def fail_stage(session: Session, job_id: uuid.UUID, stage: str, code: str, message: str) -> bool:
    """Fail the stage and, while the job is still live, the job with the same stable code (and
    queue the webhook that tells its owner). True when the job failed now."""
    session.execute(
        update(JobStage)
        .where(JobStage.job_id == job_id, JobStage.name == stage)
        .values(
            status="failed", error_code=code, error_message=message, finished_at=func.now(), lease_until=None
        )
    )
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.status not in ACTIVE_JOB_STATUSES:
        return False
    job.status = "failed"
    job.error_code = code
    job.error_message = message
    job.finished_at = func.now()
    record_event(session, job_id, "job.failed", stage, code=code, message=message)
    _queue_notification(session, job)
    return True


def max_attempts_for(stage: str, settings: Settings) -> int:
    return settings.stage_max_attempts


def _cancel_job(session: Session, job: Job, stage: str | None) -> None:
    session.execute(
        update(JobStage)
        .where(
            JobStage.job_id == job.id, JobStage.name != "notify", JobStage.status.in_(("queued", "running"))
        )
        .values(status="canceled", finished_at=func.now(), lease_until=None)
    )
    session.execute(
        update(JobStage)
        .where(JobStage.job_id == job.id, JobStage.name != "notify", JobStage.status == "pending")
        .values(status="skipped")
    )
    job.status = "canceled"
    job.error_code = "canceled"
    job.error_message = "The job was canceled."
    job.finished_at = func.now()
    record_event(session, job.id, "job.canceled", stage, status="canceled")
    _queue_notification(session, job)


def mark_canceled(session: Session, claim: Claim) -> bool:
    """A running stage stopped; if the job was canceled, record it (and never run later stages)."""
    job = session.get(Job, claim.job_id, with_for_update=True)
    if job is None or not job.cancel_requested or job.status not in ACTIVE_JOB_STATUSES:
        return False
    _cancel_job(session, job, claim.stage)
    return True


def request_cancel(session: Session, job: Job) -> bool:
    """Mark the job canceled-on-request. A job with no stage running ends at once; a running
    stage sees the flag at its next heartbeat, stops its ffmpeg child and ends the job."""
    if job.status not in ACTIVE_JOB_STATUSES:
        return False
    job.cancel_requested = True
    running = session.scalar(
        select(func.count()).where(
            JobStage.job_id == job.id, JobStage.status == "running", JobStage.name != "notify"
        )
    )
    if not running:
        _cancel_job(session, job, None)
    return True
