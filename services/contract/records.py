"""The records every transition of the stage contract shares: claims, dispatches, the job's
locked state, and the small guarded writes they are made of."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from models import STAGE_NAMES, Job, JobEvent, JobStage, StageAttempt
from services.clock import Clock
from services.config import Settings

ACTIVE_JOB_STATUSES = ("queued", "running")
FINISHED_STAGE_STATUSES = ("succeeded", "failed", "canceled", "skipped")
LAST_WORK_STAGE = "analyze"
# notify reports a job that has already ended; every other stage works on a live job.
NOTIFY = "notify"


@dataclass(frozen=True)
class Claim:
    """Proof that this worker owns one attempt of one stage."""

    job_id: uuid.UUID
    stage: str
    attempt: int  # the fencing token: the n-th claim of this stage, ever
    worker: str
    tries: int = 1  # attempts used since the job was last retried by an operator, this one included


@dataclass(frozen=True)
class Dispatch:
    """A stage message to send once the transaction that queued the stage has committed."""

    job_id: uuid.UUID
    stage: str
    priority: str
    message_id: uuid.UUID


@dataclass(frozen=True)
class JobState:
    id: uuid.UUID
    status: str
    cancel_requested: bool
    options: dict[str, Any]

    @property
    def priority(self) -> str:
        return str(self.options.get("priority", "normal"))

    @property
    def live(self) -> bool:
        return self.status in ACTIVE_JOB_STATUSES


@dataclass(frozen=True)
class ClaimOutcome:
    claim: Claim | None
    # Why there is no claim: finished, leased, not_due, not_reached, exhausted, canceled,
    # job_ended, no_job.
    refused: str | None = None
    dispatches: list[Dispatch] = field(default_factory=list)


@dataclass(frozen=True)
class Transition:
    """What a transition of a running stage did: whether it applied (False: the attempt was
    stale), whether it ended the job canceled instead, and what to send after the commit."""

    applied: bool
    canceled: bool = False
    dispatches: list[Dispatch] = field(default_factory=list)


def next_stage(stage: str) -> str | None:
    position = STAGE_NAMES.index(stage)
    return STAGE_NAMES[position + 1] if position + 1 < len(STAGE_NAMES) else None


def max_attempts_for(stage: str, settings: Settings) -> int:
    return settings.webhook_max_attempts if stage == NOTIFY else settings.stage_max_attempts


def record_event(session: Session, job_id: uuid.UUID, type_: str, stage: str | None, **data: Any) -> None:
    session.add(JobEvent(job_id=job_id, type=type_, stage=stage, data=data))


def lock_job(session: Session, job_id: uuid.UUID) -> JobState | None:
    """Lock the job's row for this transaction (the first lock any transition takes)."""
    row = session.execute(
        select(Job.id, Job.status, Job.cancel_requested, Job.options)
        .where(Job.id == job_id)
        .with_for_update()
    ).one_or_none()
    return None if row is None else JobState(row.id, row.status, row.cancel_requested, row.options)


def owned(claim: Claim) -> Any:
    """The guard of every transition of a running stage: still running, under this attempt."""
    return and_(
        JobStage.job_id == claim.job_id,
        JobStage.name == claim.stage,
        JobStage.status == "running",
        JobStage.worker == claim.worker,
        JobStage.attempts == claim.attempt,
    )


def end_attempt(session: Session, claim: Claim, outcome: str, clock: Clock, **values: Any) -> None:
    session.execute(
        update(StageAttempt)
        .where(
            StageAttempt.job_id == claim.job_id,
            StageAttempt.stage == claim.stage,
            StageAttempt.attempt == claim.attempt,
        )
        .values(outcome=outcome, finished_at=clock.now(), **values)
    )


def queue_stage(session: Session, job: JobState, stage: str, clock: Clock) -> Dispatch | None:
    """Make a pending stage claimable now, with a fresh message id; None if it was not pending."""
    message_id = uuid.uuid4()
    queued = session.execute(
        update(JobStage)
        .where(JobStage.job_id == job.id, JobStage.name == stage, JobStage.status == "pending")
        .values(status="queued", available_at=clock.now(), message_id=message_id, sent_at=None)
        .returning(JobStage.id)
    ).scalar_one_or_none()
    return None if queued is None else Dispatch(job.id, stage, job.priority, message_id)


def _skip(session: Session, job_id: uuid.UUID, stage: str, clock: Clock) -> None:
    session.execute(
        update(JobStage)
        .where(JobStage.job_id == job_id, JobStage.name == stage, JobStage.status.in_(("pending", "queued")))
        .values(status="skipped", finished_at=clock.now())
    )


def queue_notification(session: Session, job: JobState, clock: Clock) -> list[Dispatch]:
    """The job has ended: queue the webhook that tells its owner, or skip notify."""
    if job.options.get("webhook_url"):
        dispatch = queue_stage(session, job, NOTIFY, clock)
        return [dispatch] if dispatch else []
    _skip(session, job.id, NOTIFY, clock)
    return []


def fail_job(
    session: Session, job: JobState, stage: str, code: str, message: str, clock: Clock
) -> list[Dispatch]:
    """End a live job failed with the stage's stable code; the caller holds the job's lock."""
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(status="failed", error_code=code, error_message=message, finished_at=clock.now())
    )
    record_event(session, job.id, "job.failed", stage, code=code, message=message)
    return queue_notification(session, job, clock)
