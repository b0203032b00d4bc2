"""A running stage's transitions: claim, renew, complete, requeue, fail, release.

Each is one UPDATE guarded by the owner (see records.owned): a stale attempt changes no row."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from models import Job, JobPart, JobStage, StageAttempt
from services.clock import DATABASE_CLOCK, Clock
from services.contract.cancel import cancel_if_idle, finish_cancel
from services.contract.parts import (
    PartPlan,
    complete_part,
    fail_parts_stage,
    report_parts_progress,
    spawn_parts,
)
from services.contract.records import (
    FINISHED_STAGE_STATUSES,
    LAST_WORK_STAGE,
    NOTIFY,
    TRANSCODE,
    Claim,
    ClaimOutcome,
    Dispatch,
    JobState,
    Transition,
    attempt_row,
    claimed_row,
    dispatch_of,
    end_attempt,
    fail_job,
    lock_job,
    next_stage,
    owned,
    queue_notification,
    queue_stage,
    record_event,
    work_of,
)
from services.errors import ConveyorError
from services.jobs import build_result


def _why_not_claimable(session: Session, probe: Claim, max_attempts: int, clock: Clock) -> str:
    work = work_of(probe)
    row = session.execute(
        select(work.status, work.attempts - work.attempt_floor, work.available_at > clock.now()).where(
            claimed_row(probe)
        )
    ).one_or_none()
    if row is None:
        return "no_job"
    status, used, later = row
    if status in FINISHED_STAGE_STATUSES:
        return "finished"
    if status in ("pending", "waiting"):
        return "not_reached"
    if used >= max_attempts:
        return "exhausted"
    return "not_due" if status == "queued" and later else "leased"


def _claim(
    session: Session,
    job: JobState,
    probe: Claim,
    *,
    lease_seconds: float,
    max_attempts: int,
    clock: Clock,
) -> ClaimOutcome:
    """Take the stage or part `probe` names (its attempt ignored) if it is queued and due, or
    running under an expired lease, and has attempts left. The caller holds the job's lock."""
    stage, worker, work = probe.stage, probe.worker, work_of(probe)
    if stage != NOTIFY:
        if not job.live:
            return ClaimOutcome(None, "job_ended")
        if job.cancel_requested:
            return ClaimOutcome(None, "canceled", cancel_if_idle(session, job, clock).dispatches)
    now = clock.now()
    row = session.execute(
        update(work)
        .where(
            claimed_row(probe),
            or_(
                and_(work.status == "queued", work.available_at <= now),
                and_(work.status == "running", work.lease_until < now),
            ),
            work.attempts - work.attempt_floor < max_attempts,
        )
        .values(
            status="running",
            attempts=work.attempts + 1,
            worker=worker,
            lease_until=now + timedelta(seconds=lease_seconds),
            started_at=now,
            finished_at=None,
            progress=0.0,
            message_id=None,
            sent_at=None,
        )
        .returning(work.attempts, work.attempt_floor)
    ).one_or_none()
    if row is None:
        refused = _why_not_claimable(session, probe, max_attempts, clock)
        if refused == "exhausted":
            return ClaimOutcome(None, refused, _give_up(session, job, probe, max_attempts, clock))
        return ClaimOutcome(None, refused)
    attempt, floor = row
    claim = Claim(job.id, stage, attempt, worker, tries=attempt - floor, part=probe.part)
    # An attempt still marked running was taken over: its worker died or went silent.
    session.execute(
        update(StageAttempt)
        .where(
            StageAttempt.job_id == job.id,
            StageAttempt.stage == stage,
            _same_part(claim),
            StageAttempt.outcome == "running",
        )
        .values(outcome="lost", finished_at=now)
    )
    session.add(
        StageAttempt(
            job_id=job.id, stage=stage, part=probe.part, attempt=attempt, worker=worker, started_at=now
        )
    )
    if stage != NOTIFY and job.status == "queued":
        session.execute(update(Job).where(Job.id == job.id).values(status="running", updated_at=now))
    if probe.part is None:
        record_event(session, job.id, "stage.started", stage, attempt=attempt, worker=worker)
    else:
        record_event(session, job.id, "part.started", stage, part=probe.part, attempt=attempt, worker=worker)
    return ClaimOutcome(claim)


def _same_part(claim: Claim) -> Any:
    return StageAttempt.part.is_(None) if claim.part is None else StageAttempt.part == claim.part


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
    probe = Claim(job_id, stage, 0, worker)
    return _claim(session, job, probe, lease_seconds=lease_seconds, max_attempts=max_attempts, clock=clock)


def claim_part(
    session: Session,
    part_id: int,
    *,
    worker: str,
    lease_seconds: float,
    max_attempts: int,
    clock: Clock = DATABASE_CLOCK,
) -> ClaimOutcome:
    """claim_stage for one part of a transcode, named by its row's id (its task's one argument)."""
    found = session.execute(select(JobPart.job_id, JobPart.index).where(JobPart.id == part_id)).one_or_none()
    job = lock_job(session, found[0]) if found else None
    if found is None or job is None:
        return ClaimOutcome(None, "no_job")
    probe = Claim(job.id, TRANSCODE, 0, worker, part=found[1])
    return _claim(session, job, probe, lease_seconds=lease_seconds, max_attempts=max_attempts, clock=clock)


def _give_up(
    session: Session, job: JobState, probe: Claim, max_attempts: int, clock: Clock
) -> list[Dispatch]:
    """A stage or part that has used its attempts (released by shutting-down workers, say) and
    is queued again would wait for ever: it fails with `worker_lost`, and the job with it."""
    what = probe.stage if probe.part is None else f"{probe.stage} part {probe.part}"
    message = f"The {what} used its {max_attempts} attempts without finishing; giving up."
    work = work_of(probe)
    failed = session.execute(
        update(work)
        .where(claimed_row(probe), work.status == "queued")
        .values(
            status="failed",
            error_code="worker_lost",
            error_message=message,
            finished_at=clock.now(),
            message_id=None,
            sent_at=None,
        )
        .returning(work.id)
    ).scalar_one_or_none()
    if failed is None or probe.stage == NOTIFY or not job.live:
        return []
    if probe.part is not None:
        fail_parts_stage(session, job.id, "worker_lost", message, clock)
    return fail_job(session, job, probe.stage, "worker_lost", message, clock)


def renew_lease(
    session: Session, claim: Claim, *, lease_seconds: float, progress: float, clock: Clock = DATABASE_CLOCK
) -> bool:
    """Extend the lease and record progress; False when the stage is no longer this attempt's.

    Progress also becomes a `stage.progress` event (what live clients follow) each time it
    crosses a whole point; the heartbeat calls this at most once a second, which bounds the
    event rate, and whole points bound the event count to about a hundred per attempt."""
    work = work_of(claim)
    previous = session.scalar(select(work.progress).where(owned(claim)).with_for_update())
    if previous is None:
        return False
    session.execute(
        update(work)
        .where(owned(claim))
        .values(lease_until=clock.now() + timedelta(seconds=lease_seconds), progress=progress)
    )
    if claim.part is not None:
        report_parts_progress(session, claim.job_id)
    elif int(progress) > int(previous):
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


def _cancel_instead(
    session: Session, claim: Claim, clock: Clock, *, body_finished: bool = False
) -> Transition | None:
    """Every way an attempt ends looks for a cancel first (holding the job's lock, so no cancel
    slips in after the look): a cancel that was answered is never lost to a late completion,
    failure or retry. None when the job was not canceled; else what the cancel did."""
    job = lock_job(session, claim.job_id)
    if job is None:
        return Transition(False)
    if claim.stage == NOTIFY or not job.cancel_requested:
        return None
    ended = finish_cancel(session, claim, clock=clock, body_finished=body_finished)
    return Transition(False, canceled=ended.canceled, dispatches=ended.dispatches)


def complete_stage(
    session: Session, claim: Claim, output: dict[str, Any], *, clock: Clock = DATABASE_CLOCK
) -> Transition:
    """Record the stage's output and queue the next stage, in the caller's transaction.

    Checks for a cancel first: a job canceled while this stage ran ends canceled, and its
    output is never recorded. Not applied when the attempt is stale (another attempt owns
    the stage): the output is discarded, and nothing it wrote is read, since every attempt
    writes under its own attempt-scoped folder or key. The part that completes last queues
    its stage again, to stitch the parts."""
    canceled = _cancel_instead(session, claim, clock, body_finished=True)
    if canceled is not None:
        return canceled
    job = lock_job(session, claim.job_id)
    assert job is not None  # _cancel_instead found it, and holds its lock
    if claim.part is not None:
        return complete_part(session, job, claim, output, clock)
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
        dispatches = queue_notification(session, job, "succeeded", clock)
    elif (following := next_stage(claim.stage)) is not None:
        queued = queue_stage(session, job, following, clock)
        dispatches = [queued] if queued else []
    session.execute(update(Job).where(Job.id == claim.job_id).values(updated_at=now))
    return Transition(True, dispatches=dispatches)


def start_parts(
    session: Session,
    claim: Claim,
    plans: Sequence[PartPlan],
    resume_state: dict[str, Any],
    *,
    clock: Clock = DATABASE_CLOCK,
) -> Transition:
    """The transcode stage's planning attempt ends: its plan is kept on the stage's row (every
    part and the stitch read it), its parts are queued, and the stage waits for them. A job
    canceled meanwhile ends canceled instead."""
    canceled = _cancel_instead(session, claim, clock, body_finished=True)
    if canceled is not None:
        return canceled
    job = lock_job(session, claim.job_id)
    assert job is not None  # _cancel_instead found it, and holds its lock
    session.execute(update(JobStage).where(owned(claim)).values(resume_state=resume_state))
    return spawn_parts(session, job, claim, plans, clock)


def requeue_stage(
    session: Session,
    claim: Claim,
    error: ConveyorError,
    *,
    delay_seconds: float,
    clock: Clock = DATABASE_CLOCK,
) -> Transition:
    """A transient failure: give the stage back, claimable again once the delay has passed.

    No message is sent now (a delayed message would sit in some busy worker's prefetch): the
    sweeper sends it when `available_at` comes. A job canceled meanwhile ends canceled."""
    canceled = _cancel_instead(session, claim, clock)
    if canceled is not None:
        return canceled
    work = work_of(claim)
    released = session.execute(
        update(work)
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
        .returning(work.id)
    ).scalar_one_or_none()
    if released is None:
        return Transition(False)
    end_attempt(session, claim, "retrying", clock, error_code=error.code)
    record_event(
        session,
        claim.job_id,
        "stage.retrying",
        claim.stage,
        code=error.code,
        delay=delay_seconds,
        part=claim.part,
    )
    return Transition(True)


def fail_stage(
    session: Session, claim: Claim, code: str, message: str, *, clock: Clock = DATABASE_CLOCK
) -> Transition:
    """A permanent failure (or attempts used up): fail the stage and, while the job is live, the
    job with the same stable code, and queue the webhook that tells its owner. A job canceled
    while the stage ran ends canceled instead: the cancel was answered first."""
    canceled = _cancel_instead(session, claim, clock)
    if canceled is not None:
        return canceled
    job = lock_job(session, claim.job_id)
    work = work_of(claim)
    failed = session.execute(
        update(work)
        .where(owned(claim))
        .values(
            status="failed",
            error_code=code,
            error_message=message,
            finished_at=clock.now(),
            lease_until=None,
        )
        .returning(work.id)
    ).scalar_one_or_none()
    if failed is None or job is None:
        return Transition(False)
    end_attempt(session, claim, "failed", clock, error_code=code)
    if claim.stage == NOTIFY or not job.live:
        return Transition(True)
    if claim.part is not None:
        fail_parts_stage(session, job.id, code, message, clock)
    return Transition(True, dispatches=fail_job(session, job, claim.stage, code, message, clock))


def release_stage(session: Session, claim: Claim, *, clock: Clock = DATABASE_CLOCK) -> Dispatch | None:
    """Give a running stage back on shutdown so another worker takes it now, not after its lease
    expires. The attempt counts: a worker that crash-loops must use its attempts up. The old
    attempt's heartbeat then finds the stage gone and stops its work."""
    work = work_of(claim)
    released = session.execute(
        update(work)
        .where(owned(claim))
        .values(
            status="queued",
            worker=None,
            lease_until=None,
            available_at=clock.now(),
            message_id=uuid.uuid4(),
            sent_at=None,
        )
        .returning(work.id)
    ).scalar_one_or_none()
    if released is None:
        return None
    end_attempt(session, claim, "released", clock)
    record_event(
        session, claim.job_id, "stage.released", claim.stage, reason="worker_shutdown", part=claim.part
    )
    return dispatch_of(session, work, released)


def record_stopped(session: Session, claim: Claim, reason: str, *, clock: Clock = DATABASE_CLOCK) -> None:
    """An attempt that stopped because it lost its stage (taken over, released, or its own lease
    ran out): only its own attempt record changes; the stage row belongs to someone else."""
    session.execute(
        update(StageAttempt)
        .where(attempt_row(claim), StageAttempt.outcome == "running")
        .values(outcome="lost", error_code=reason, finished_at=clock.now())
    )
