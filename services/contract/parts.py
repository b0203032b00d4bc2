"""Parts of a transcode under the stage contract: planned by the transcode stage, taken by any
video host, fanned in by the part that completes last.

The transcode stage's first claim plans its parts (`spawn_parts`): they are inserted queued,
each with its message, and the stage waits ('waiting', with no lease: the parts hold theirs).
A part is claimed, renewed, completed, requeued, failed and released like a stage (the same
functions, on the job_parts table). The part that completes last queues the transcode stage
again, and the stage's next claim stitches the parts. The count of parts left is taken under
the job's lock, which every transition holds first, so two parts finishing together cannot
both be last, and neither can be missed: the fan-in is counted in PostgreSQL, never by a
Celery chord (whose fan-in over Redis has open bugs).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from models import JobPart, JobStage
from services.clock import Clock
from services.contract.records import (
    TRANSCODE,
    Claim,
    Dispatch,
    JobState,
    Transition,
    dispatch_of,
    end_attempt,
    owned,
    record_event,
)

# What a part covers: a span of the video in every rendition, or the sound (every track, whole).
VIDEO, SOUND = "video", "sound"


@dataclass(frozen=True)
class PartPlan:
    """One part as the transcode stage plans it (services.media.parts decides the spans)."""

    index: int
    kind: str  # video, or sound (every sound track, whole)
    start_seconds: float
    end_seconds: float | None
    span_seconds: float
    first_segment: int


def spawn_parts(
    session: Session, job: JobState, claim: Claim, plans: Sequence[PartPlan], clock: Clock
) -> Transition:
    """The transcode stage's planning claim ends: its parts are queued (on an operator's retry,
    those that did not succeed are queued again with fresh attempts) and the stage waits for
    them. The caller holds the job's lock and has looked for a cancel."""
    now = clock.now()
    waiting = session.execute(
        update(JobStage)
        .where(owned(claim))
        .values(
            status="waiting",
            worker=None,
            lease_until=None,
            progress=0.0,
            # The stitch that follows is a claim of its own, with the stage's attempts ahead.
            attempt_floor=JobStage.attempts,
        )
        .returning(JobStage.priority_rank)
    ).scalar_one_or_none()
    if waiting is None:
        end_attempt(session, claim, "discarded", clock, body_finished_at=now)
        return Transition(False)
    end_attempt(session, claim, "planned", clock, body_finished_at=now)
    have_parts = session.scalar(select(func.count()).where(JobPart.job_id == job.id))
    if not have_parts:
        queued = session.execute(
            insert(JobPart)
            .values(
                [
                    {
                        "job_id": job.id,
                        "index": plan.index,
                        "kind": plan.kind,
                        "start_seconds": plan.start_seconds,
                        "end_seconds": plan.end_seconds,
                        "span_seconds": plan.span_seconds,
                        "first_segment": plan.first_segment,
                        "status": "queued",
                        "priority_rank": waiting,
                        "available_at": now,
                        "message_id": uuid.uuid4(),
                    }
                    for plan in plans
                ]
            )
            .returning(JobPart.id, JobPart.kind, JobPart.index)
        ).all()
    else:
        queued = session.execute(
            update(JobPart)
            .where(JobPart.job_id == job.id, JobPart.status != "succeeded")
            .values(
                status="queued",
                worker=None,
                lease_until=None,
                progress=0.0,
                available_at=now,
                message_id=func.gen_random_uuid(),
                sent_at=None,
                attempt_floor=JobPart.attempts,
                error_code=None,
                error_message=None,
                finished_at=None,
            )
            .returning(JobPart.id, JobPart.kind, JobPart.index)
        ).all()
    # The sound first: it is the longest part (the whole source, encoded once), so it runs
    # beside the video parts instead of alone after them; then the video parts from the start.
    ids = [row.id for row in sorted(queued, key=lambda row: (row.kind != SOUND, row.index))]
    record_event(session, job.id, "stage.parts", TRANSCODE, parts=len(plans) or have_parts, queued=len(ids))
    if not ids:  # every part had succeeded (a retry after the stitch failed): stitch again now
        return Transition(True, dispatches=_queue_stitch(session, job, clock))
    return Transition(True, dispatches=[dispatch_of(session, JobPart, row_id) for row_id in ids])


def _queue_stitch(session: Session, job: JobState, clock: Clock) -> list[Dispatch]:
    queued = session.execute(
        update(JobStage)
        .where(JobStage.job_id == job.id, JobStage.name == TRANSCODE, JobStage.status == "waiting")
        .values(status="queued", available_at=clock.now(), message_id=uuid.uuid4(), sent_at=None)
        .returning(JobStage.id)
    ).scalar_one_or_none()
    return [] if queued is None else [dispatch_of(session, JobStage, queued)]


def complete_part(
    session: Session, job: JobState, claim: Claim, output: dict[str, Any], clock: Clock
) -> Transition:
    """Record a part's output; the part that leaves no other unfinished queues the stitch. The
    caller holds the job's lock and has looked for a cancel."""
    now = clock.now()
    done = session.execute(
        update(JobPart)
        .where(owned(claim))
        .values(status="succeeded", progress=100.0, output=output, finished_at=now, lease_until=None)
        .returning(JobPart.id)
    ).scalar_one_or_none()
    if done is None:
        end_attempt(session, claim, "discarded", clock, body_finished_at=now)
        return Transition(False)
    end_attempt(session, claim, "succeeded", clock, body_finished_at=now)
    record_event(session, job.id, "part.succeeded", TRANSCODE, part=claim.part, attempt=claim.attempt)
    report_parts_progress(session, job.id)
    left = session.scalar(select(func.count()).where(JobPart.job_id == job.id, JobPart.status != "succeeded"))
    return Transition(True, dispatches=[] if left else _queue_stitch(session, job, clock))


def fail_parts_stage(session: Session, job_id: uuid.UUID, code: str, message: str, clock: Clock) -> None:
    """A part failed for good: its stage fails with it, and the other parts stop (their
    heartbeats find their rows taken from them)."""
    now = clock.now()
    session.execute(
        update(JobStage)
        .where(JobStage.job_id == job_id, JobStage.name == TRANSCODE, JobStage.status == "waiting")
        .values(status="failed", error_code=code, error_message=message, finished_at=now)
    )
    session.execute(
        update(JobPart)
        .where(JobPart.job_id == job_id, JobPart.status.in_(("queued", "running")))
        .values(status="canceled", finished_at=now, lease_until=None, message_id=None, sent_at=None)
    )


def report_parts_progress(session: Session, job_id: uuid.UUID) -> None:
    """The transcode stage's progress is the share of the video its parts have done (each
    part's progress weighted by its span); written, with a `stage.progress` event for live
    clients, each time it crosses a whole point."""
    done, total = session.execute(
        select(func.sum(JobPart.progress * JobPart.span_seconds), func.sum(JobPart.span_seconds)).where(
            JobPart.job_id == job_id, JobPart.kind == "video"
        )
    ).one()
    if not total:
        return
    progress = min(99.9, float(done) / float(total))
    changed = session.execute(
        update(JobStage)
        .where(
            JobStage.job_id == job_id,
            JobStage.name == TRANSCODE,
            JobStage.status == "waiting",
            func.floor(JobStage.progress) < func.floor(progress),
        )
        .values(progress=progress)
        .returning(JobStage.id)
    ).scalar_one_or_none()
    if changed is not None:
        record_event(session, job_id, "stage.progress", TRANSCODE, progress=round(progress, 1))
