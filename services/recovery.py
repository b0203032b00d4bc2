"""Finding stages the broker lost or whose worker died, so nothing is lost.

A stage is lost when it is queued, older than the grace period, and its message is not in
the broker (a lost message, a flushed Redis, a crash between commit and send), or running
under an expired lease (its worker died). Rows are locked with SKIP LOCKED so two sweepers never collide.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from models import Job, JobStage
from services.config import Settings
from services.stages import ACTIVE_JOB_STATUSES, fail_stage, max_attempts_for, record_event


@dataclass(frozen=True)
class LostStage:
    job_id: uuid.UUID
    stage: str
    priority: str


@dataclass(frozen=True)
class Recovery:
    to_dispatch: list[LostStage]
    failed: list[LostStage]


def recover_lost_stages(
    session: Session, settings: Settings, in_broker: set[tuple[str, str]], *, limit: int = 500
) -> Recovery:
    """Queue again what was lost; `in_broker` holds the (job_id, stage) pairs whose message the
    broker still has, which are only waiting their turn and are left alone."""
    grace = timedelta(seconds=settings.sweep_grace_seconds)
    live = or_(Job.status.in_(ACTIVE_JOB_STATUSES), JobStage.name == "notify")
    rows = session.scalars(
        select(JobStage)
        .join(Job, Job.id == JobStage.job_id)
        .where(
            live,
            or_(
                and_(JobStage.status == "queued", JobStage.available_at < func.now() - grace),
                and_(JobStage.status == "running", JobStage.lease_until < func.now()),
            ),
        )
        .order_by(JobStage.available_at)
        .limit(limit)
        .with_for_update(of=JobStage, skip_locked=True)
    ).all()
    to_dispatch: list[LostStage] = []
    failed: list[LostStage] = []
    for stage in rows:
        if stage.status == "queued" and (str(stage.job_id), stage.name) in in_broker:
            continue
        lost = LostStage(stage.job_id, stage.name, str(stage.job.options.get("priority", "normal")))
        if stage.status == "running" and stage.attempts >= max_attempts_for(stage.name, settings):
            fail_stage(
                session,
                stage.job_id,
                stage.name,
                "worker_lost",
                f"The {stage.name} stage's worker stopped answering {stage.attempts} times; giving up.",
            )
            failed.append(lost)
            continue
        reason = "lease_expired" if stage.status == "running" else "not_picked_up"
        stage.status, stage.worker, stage.lease_until = "queued", None, None
        stage.available_at = func.now()
        record_event(session, stage.job_id, "stage.redispatched", stage.name, reason=reason)
        to_dispatch.append(lost)
    return Recovery(to_dispatch=to_dispatch, failed=failed)


def release_worker_stages(session: Session, worker_prefix: str) -> list[LostStage]:
    """Give back every stage a shutting-down worker still runs, without counting the attempt,
    so another worker takes it now instead of after the lease expires. The worker's own
    heartbeat then finds the stage gone and stops its ffmpeg."""
    rows = session.scalars(
        select(JobStage)
        .where(JobStage.status == "running", JobStage.worker.startswith(worker_prefix, autoescape=True))
        .with_for_update(of=JobStage, skip_locked=True)
    ).all()
    released = []
    for stage in rows:
        stage.status, stage.worker, stage.lease_until = "queued", None, None
        stage.attempts = max(0, stage.attempts - 1)
        stage.available_at = func.now()
        record_event(session, stage.job_id, "stage.released", stage.name, reason="worker_shutdown")
        released.append(LostStage(stage.job_id, stage.name, str(stage.job.options.get("priority", "normal"))))
    return released
