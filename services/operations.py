"""What operators do to jobs: list them, retry a failed one, clean old ones away."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.orm import Session

from models import STAGE_NAMES, Job, JobStage
from services.config import Settings
from services.contract import Dispatch, record_event
from services.errors import ConveyorError
from services.storage import make_s3_client

ENDED_JOB_STATUSES = ("succeeded", "failed", "canceled")
# notify only reports the outcome; the stages before it are the job's work.
WORK_STAGES = STAGE_NAMES[:-1]


@dataclass(frozen=True)
class Cursor:
    """Where a page of jobs (newest first) ended: the last job's creation time and id."""

    created_at: datetime
    job_id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), str(self.job_id)]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor a previous page returned; ValueError for anything else."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            created_at, job_id = json.loads(raw)
            return cls(datetime.fromisoformat(created_at), uuid.UUID(job_id))
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a cursor this API returned: {text[:40]!r}") from exc


def list_jobs(
    session: Session,
    *,
    owner_id: uuid.UUID | None,
    status: str | None,
    created_after: datetime | None,
    limit: int,
    after: Cursor | None,
) -> tuple[list[Job], Cursor | None]:
    """One page of jobs, newest first, and the cursor of the next page (None on the last).

    Keyset pagination on (created_at, id): a page never repeats or skips a job while new
    jobs arrive, and costs the same at any depth."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    if owner_id is not None:
        query = query.where(Job.owner_id == owner_id)
    if status is not None:
        query = query.where(Job.status == status)
    if created_after is not None:
        query = query.where(Job.created_at > created_after)
    if after is not None:
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(after.created_at, after.job_id))
    jobs = list(session.scalars(query).all())
    if len(jobs) <= limit:
        return jobs, None
    last = jobs[limit - 1]
    return jobs[:limit], Cursor(last.created_at, last.id)


def failed_jobs(session: Session, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Failed jobs, newest failure first, each with the stage that failed; and how many in all."""
    total = session.scalar(select(func.count()).select_from(Job).where(Job.status == "failed")) or 0
    rows = session.execute(
        select(Job, JobStage)
        .outerjoin(
            JobStage,
            (JobStage.job_id == Job.id) & (JobStage.status == "failed") & (JobStage.name != "notify"),
        )
        .where(Job.status == "failed")
        .order_by(Job.finished_at.desc().nulls_last(), Job.id)
        .limit(limit)
        .offset(offset)
    ).all()
    failed = [
        {
            "id": str(job.id),
            "owner_id": str(job.owner_id),
            "stage": stage.name if stage else None,
            "error": {"code": job.error_code, "message": job.error_message},
            "attempts": stage.attempts if stage else 0,
            "created_at": job.created_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        }
        for job, stage in rows
    ]
    return failed, total


def restart_stage(job: Job) -> str:
    """The first work stage a retry must run again: the first that did not succeed."""
    by_name = {stage.name: stage for stage in job.stages}
    return next((name for name in WORK_STAGES if by_name[name].status != "succeeded"), WORK_STAGES[-1])


def retry_inputs(job: Job) -> list[str]:
    """The workspace keys and prefixes a retry reads: the uploaded source, and the outputs the
    stages before the restart point recorded (the keys of the attempts that succeeded)."""
    before = WORK_STAGES[: WORK_STAGES.index(restart_stage(job))]
    outputs = {stage.name: stage.output or {} for stage in job.stages}
    needed = [str(job.source["upload"]["key"])] if "upload" in job.source else []
    if "fetch" in before:
        needed.append(str(outputs["fetch"]["key"]))
    if "transcode" in before:
        needed.append(str(outputs["transcode"]["prefix"]))
        needed += [str(folder) for folder in outputs["transcode"].get("parts", ())]
    return list(dict.fromkeys(needed))


def retry_job(session: Session, job_id: uuid.UUID) -> Dispatch:
    """Re-queue a failed job from its first unfinished stage, keeping what earlier stages
    produced (their rows stay succeeded, their files stay in the workspace). Returns the
    message to send once the caller has committed."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise ConveyorError(f"No job {job_id}.", code="not_found")
    if job.status != "failed":
        raise ConveyorError(f"Only failed jobs can be retried; this one is {job.status}.", code="conflict")
    if job.workspace_cleaned_at is not None and retry_inputs(job):
        raise ConveyorError("The job's workspace files were cleaned away; submit it again.", code="conflict")
    restart = restart_stage(job)
    message_id = uuid.uuid4()
    for stage in job.stages[STAGE_NAMES.index(restart) :]:
        stage.status = "queued" if stage.name == restart else "pending"
        stage.available_at = func.now() if stage.name == restart else None
        stage.message_id = message_id if stage.name == restart else None
        stage.sent_at = None
        # A fresh set of attempts (the operator decided the cause is gone), while the attempt
        # numbers go on: each stays the fencing token and the folder of one attempt only.
        stage.attempt_floor = stage.attempts
        stage.progress = 0.0
        stage.worker = stage.lease_until = stage.started_at = stage.finished_at = None
        stage.error_code = stage.error_message = None
        stage.output = None
    job.status = "queued" if restart == STAGE_NAMES[0] else "running"
    job.error_code = job.error_message = None
    job.result = None
    job.finished_at = None
    # Running again, it will end again, and its workspace be cleaned again then.
    job.workspace_cleaned_at = None
    job.cancel_requested = False
    job.updated_at = func.now()
    record_event(session, job.id, "job.retried", restart, status=job.status)
    return Dispatch(job.id, restart, str(job.options.get("priority", "normal")), message_id)


def jobs_to_clean(session: Session, *, status: str, older_than_seconds: int, limit: int) -> list[uuid.UUID]:
    """Delete up to `limit` ended jobs (rows, stages, events, deliveries) finished longer ago
    than `older_than_seconds`; returns their ids so the caller can remove their files after
    the commit. SKIP LOCKED lets two cleaners run at once without deleting a job twice."""
    if status not in ENDED_JOB_STATUSES:
        raise ConveyorError(f"Only ended jobs can be cleaned, not {status!r}.", code="invalid_request")
    ids = list(
        session.scalars(
            select(Job.id)
            .where(
                Job.status == status,
                Job.finished_at < func.now() - timedelta(seconds=older_than_seconds),
            )
            .order_by(Job.finished_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
    )
    if ids:
        session.execute(delete(Job).where(Job.id.in_(ids)))
    return ids


def delete_delivered_outputs(settings: Settings, job_ids: list[uuid.UUID]) -> int:
    """Remove what upload published for these jobs from the delivery bucket; returns the
    number of objects deleted. Only on explicit request: players may still use them."""
    client = make_s3_client(settings)
    deleted = 0
    for job_id in job_ids:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=settings.s3_bucket, Prefix=f"{settings.s3_prefix}/{job_id}/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=settings.s3_bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
    return deleted
