"""Creating jobs and presenting them: the shapes the API returns and the webhook carries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import STAGE_NAMES, Job, JobEvent, JobStage

# How much of a job's overall progress each stage accounts for (notify is delivery only).
STAGE_WEIGHTS: dict[str, float] = {"fetch": 10, "transcode": 60, "upload": 15, "analyze": 15, "notify": 0}


def create_job(
    session: Session,
    *,
    owner_id: uuid.UUID,
    source: dict[str, Any],
    options: dict[str, Any],
    job_id: uuid.UUID | None = None,
) -> Job:
    """Insert the job and its five stage rows; fetch is queued, the rest wait their turn."""
    job = Job(id=job_id or uuid.uuid4(), owner_id=owner_id, status="queued", source=source, options=options)
    job.stages = [
        JobStage(
            name=name,
            position=position,
            status="queued" if position == 0 else "pending",
            attempts=0,
            progress=0.0,
            available_at=func.now() if position == 0 else None,
        )
        for position, name in enumerate(STAGE_NAMES)
    ]
    session.add(job)
    session.flush()
    session.add(JobEvent(job_id=job.id, type="job.queued", data={"status": "queued"}))
    return job


def get_job(session: Session, job_id: uuid.UUID) -> Job | None:
    return session.scalars(select(Job).where(Job.id == job_id)).one_or_none()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_progress(job: Job) -> float:
    if job.status == "succeeded":
        return 100.0
    total = sum(STAGE_WEIGHTS.values())
    done = sum(
        STAGE_WEIGHTS[stage.name]
        * (100.0 if stage.status in ("succeeded", "skipped") else stage.progress)
        / 100.0
        for stage in job.stages
    )
    return round(100.0 * done / total, 1)


def current_stage(job: Job) -> str | None:
    """The stage the job is at: the first one not finished (the failed one for a failed job)."""
    for stage in job.stages:
        if stage.status in ("queued", "running", "failed", "canceled"):
            return stage.name
    return None


def stage_to_dict(stage: JobStage) -> dict[str, Any]:
    error = {"code": stage.error_code, "message": stage.error_message} if stage.error_code else None
    return {
        "name": stage.name,
        "status": stage.status,
        "attempts": stage.attempts,
        "progress": round(stage.progress, 1),
        "started_at": _iso(stage.started_at),
        "finished_at": _iso(stage.finished_at),
        "error": error,
    }


def job_to_dict(job: Job) -> dict[str, Any]:
    error = {"code": job.error_code, "message": job.error_message} if job.error_code else None
    return {
        "id": str(job.id),
        "status": job.status,
        "stage": current_stage(job),
        "progress": job_progress(job),
        "stages": [stage_to_dict(stage) for stage in job.stages],
        "source": public_source(job.source),
        "options": job.options,
        "result": job.result,
        "error": error,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "finished_at": _iso(job.finished_at),
    }


def public_source(source: dict[str, Any]) -> dict[str, Any]:
    """The source as shown to clients: where an upload sits in the workspace is ours alone."""
    if "upload" in source:
        upload = source["upload"]
        return {"upload": {"filename": upload.get("filename"), "bytes": upload.get("bytes")}}
    return source


def build_result(outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The job's result from what the upload and analyze stages recorded."""
    published = outputs.get("upload") or {}
    analyzed = outputs.get("analyze") or {}
    return {
        "playback_url": published.get("playback_url"),
        "renditions": published.get("renditions", []),
        "poster_url": published.get("poster_url"),
        "storyboard": published.get("storyboard"),
        "captions": analyzed.get("captions", []),
        "analysis": analyzed.get("analysis"),
    }
