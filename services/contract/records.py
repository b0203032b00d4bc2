"""The records every transition of the stage contract shares: claims, dispatches, the job's
locked state, and the small guarded writes they are made of."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from models import STAGE_NAMES, Job, JobEvent, JobPart, JobStage, StageAttempt
from services.clock import Clock
from services.config import Settings
from services.webhooks.messages import has_webhook_targets

ACTIVE_JOB_STATUSES = ("queued", "running")
FINISHED_STAGE_STATUSES = ("succeeded", "failed", "canceled", "skipped")
LAST_WORK_STAGE = "analyze"
# The stage whose work is done in parts (services.contract.parts).
TRANSCODE = "transcode"
# notify reports a job that has already ended; every other stage works on a live job.
NOTIFY = "notify"


@dataclass(frozen=True)
class Claim:
    """Proof that this worker owns one attempt of one stage, or of one part of a stage."""

    job_id: uuid.UUID
    stage: str
    attempt: int  # the fencing token: the n-th claim of this stage (or part), ever
    worker: str
    tries: int = 1  # attempts used since the job was last retried by an operator, this one included
    part: int | None = None  # the part's index, for a claim of a part


@dataclass(frozen=True)
class Dispatch:
    """A message to send once the transaction that queued its stage (or part) has committed."""

    job_id: uuid.UUID
    stage: str
    priority: str
    message_id: uuid.UUID
    part_id: int | None = None  # a part's row: its task takes this id only
    part_seconds: float | None = None  # the part's span, which its time limits follow


@dataclass(frozen=True)
class JobState:
    id: uuid.UUID
    owner_id: uuid.UUID
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
    """Every stage, notify included: notify only creates the webhook messages, which keep
    their own schedule of attempts (services.webhooks)."""
    return settings.stage_max_attempts


def record_event(session: Session, job_id: uuid.UUID, type_: str, stage: str | None, **data: Any) -> None:
    session.add(JobEvent(job_id=job_id, type=type_, stage=stage, data=data))


def lock_job(session: Session, job_id: uuid.UUID) -> JobState | None:
    """Lock the job's row for this transaction (the first lock any transition takes)."""
    row = session.execute(
        select(Job.id, Job.owner_id, Job.status, Job.cancel_requested, Job.options)
        .where(Job.id == job_id)
        .with_for_update()
    ).one_or_none()
    return (
        None if row is None else JobState(row.id, row.owner_id, row.status, row.cancel_requested, row.options)
    )


def work_of(claim: Claim) -> type[JobStage] | type[JobPart]:
    """The table the claimed row is in."""
    return JobStage if claim.part is None else JobPart


def claimed_row(claim: Claim) -> Any:
    """The one row a claim is about: the stage, or the part."""
    if claim.part is None:
        return and_(JobStage.job_id == claim.job_id, JobStage.name == claim.stage)
    return and_(JobPart.job_id == claim.job_id, JobPart.index == claim.part)


def owned(claim: Claim) -> Any:
    """The guard of every transition of a running stage or part: still running, under this
    attempt of this worker."""
    work = work_of(claim)
    return and_(
        claimed_row(claim),
        work.status == "running",
        work.worker == claim.worker,
        work.attempts == claim.attempt,
    )


def attempt_row(claim: Claim) -> Any:
    """The claim's own record in stage_attempts."""
    which = StageAttempt.part.is_(None) if claim.part is None else StageAttempt.part == claim.part
    return and_(
        StageAttempt.job_id == claim.job_id,
        StageAttempt.stage == claim.stage,
        which,
        StageAttempt.attempt == claim.attempt,
    )


def end_attempt(session: Session, claim: Claim, outcome: str, clock: Clock, **values: Any) -> None:
    session.execute(
        update(StageAttempt)
        .where(attempt_row(claim))
        .values(outcome=outcome, finished_at=clock.now(), **values)
    )


def dispatch_of(session: Session, work: type[JobStage] | type[JobPart], row_id: int) -> Dispatch:
    """The message of a queued stage or part, as its row names it (read after the UPDATE that
    gave it a fresh message id, in the same transaction)."""
    if work is JobPart:
        part = session.execute(
            select(JobPart.job_id, JobPart.message_id, JobPart.span_seconds, Job.options["priority"].astext)
            .join(Job, Job.id == JobPart.job_id)
            .where(JobPart.id == row_id)
        ).one()
        return Dispatch(
            part[0], TRANSCODE, part[3] or "normal", part[1], part_id=row_id, part_seconds=part[2]
        )
    stage = session.execute(
        select(JobStage.job_id, JobStage.name, JobStage.message_id, Job.options["priority"].astext)
        .join(Job, Job.id == JobStage.job_id)
        .where(JobStage.id == row_id)
    ).one()
    return Dispatch(stage[0], stage[1], stage[3] or "normal", stage[2])


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


def queue_notification(session: Session, job: JobState, outcome: str, clock: Clock) -> list[Dispatch]:
    """The job has ended (`outcome`: succeeded, failed, canceled): queue notify when anyone is
    to be told (its webhook_url, or an endpoint of its tenant subscribed), else skip it."""
    if has_webhook_targets(session, owner_id=job.owner_id, options=job.options, outcome=outcome):
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
    return queue_notification(session, job, "failed", clock)
