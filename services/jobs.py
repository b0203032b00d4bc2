"""Creating jobs and presenting them: the shapes the API returns and the webhook carries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Select, bindparam, case, func, insert, literal, select
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session

from models import STAGE_NAMES, Base, Job, JobStage, LeasedWork
from services.playback import PlaybackLinks
from services.queue_stats import Waiting, priority_rank, recent_means, running_now, waiting_from

# How much of a job's overall progress each stage accounts for (notify is delivery only).
STAGE_WEIGHTS: dict[str, float] = {"fetch": 10, "transcode": 60, "upload": 15, "analyze": 15, "notify": 0}


@dataclass(frozen=True)
class CreatedJob:
    """A job as inserted (detached: reading it costs no query), and what its wait estimate
    needs besides its place in line, which the broker tells when the job is sent."""

    job: Job
    message_id: uuid.UUID  # of the fetch message, to send once the insert has committed
    running: int
    mean_seconds: float | None

    def waiting(self, ahead: int) -> Waiting:
        return waiting_from(STAGE_NAMES[0], ahead, self.running, self.mean_seconds)


@cache
def _create_job_statement(idempotent: bool) -> Select[Any]:
    """Built once with bound parameters, so SQLAlchemy compiles it once per process. The
    idempotent variant also records the request's Idempotency-Key in the same statement: a
    concurrent duplicate fails on its primary key and inserts nothing at all."""
    jobs, stages, events = (Base.metadata.tables[name] for name in ("jobs", "job_stages", "job_events"))
    job_id = bindparam("job_id", type_=jobs.c.id.type)
    rank = bindparam("rank", type_=stages.c.priority_rank.type)
    message_id = bindparam("message_id", type_=stages.c.message_id.type)
    new_job = (
        insert(jobs)
        .values(
            id=job_id,
            owner_id=bindparam("owner_id"),
            status="queued",
            source=bindparam("source"),
            options=bindparam("options"),
        )
        .returning(jobs.c.created_at, jobs.c.updated_at)
        .cte("new_job")
    )
    # Five rows from one SELECT rather than a multi-row VALUES, which SQLAlchemy cannot cache.
    stage = func.unnest(array(STAGE_NAMES)).table_valued("name", with_ordinality="number").render_derived()
    first = stage.c.number == 1
    new_stages = (
        insert(stages)
        .from_select(
            [
                "job_id",
                "name",
                "position",
                "priority_rank",
                "status",
                "attempts",
                "progress",
                "available_at",
                "message_id",
            ],
            select(
                job_id,
                stage.c.name,
                stage.c.number - 1,
                rank,
                case((first, "queued"), else_="pending"),
                literal(0),
                literal(0.0),
                case((first, func.now())),
                case((first, message_id)),
            ),
        )
        .cte("new_stages")
    )
    new_event = (
        insert(events).values(job_id=job_id, type="job.queued", data={"status": "queued"}).cte("new_event")
    )
    running = running_now(STAGE_NAMES[0])
    ctes = [new_stages, new_event]
    if idempotent:
        keys = Base.metadata.tables["idempotency_keys"]
        ctes.append(
            insert(keys)
            .values(
                owner_id=bindparam("owner_id"),
                key=bindparam("idempotency_key"),
                fingerprint=bindparam("fingerprint"),
                job_id=job_id,
            )
            .cte("new_idempotency_key")
        )
    return select(new_job.c.created_at, new_job.c.updated_at, running).add_cte(*ctes)


def create_job(
    connection: Connection | Session,
    *,
    owner_id: uuid.UUID,
    source: dict[str, Any],
    options: dict[str, Any],
    job_id: uuid.UUID | None = None,
    idempotency: tuple[str, str] | None = None,
) -> CreatedJob:
    """Insert the job, its five stage rows (fetch queued, the rest pending, with the id of the
    fetch message to send once this has committed) and its first event.

    Submissions are the API's hot path, so this is one statement, one round trip: the rows go
    in through data-modifying CTEs. Being one statement, it is atomic even on a connection in
    autocommit, as the API runs it. The place in line is not counted here: that reads every
    row ahead, so a backlog of thousands made each submission slower.

    `idempotency` is (Idempotency-Key, request fingerprint): a key this tenant already used
    raises IntegrityError and creates nothing.
    """
    job_id = job_id or uuid.uuid4()
    message_id = uuid.uuid4()
    parameters = {
        "message_id": message_id,
        "job_id": job_id,
        "owner_id": owner_id,
        "source": source,
        "options": options,
        "rank": priority_rank(options.get("priority", "normal")),
    }
    if idempotency is not None:
        parameters["idempotency_key"], parameters["fingerprint"] = idempotency
    # Core, not the ORM: nothing here needs the identity map, and this path is hot.
    statement = _create_job_statement(idempotency is not None)
    created_at, updated_at, running = connection.execute(statement, parameters).one()
    first = STAGE_NAMES[0]
    job = Job(
        id=job_id,
        owner_id=owner_id,
        status="queued",
        source=source,
        options=options,
        result=None,
        error_code=None,
        error_message=None,
        cancel_requested=False,
        created_at=created_at,
        updated_at=updated_at,
        finished_at=None,
    )
    # What the statement inserted, so the answer needs no second read.
    job.stages = [
        JobStage(
            job_id=job_id,
            name=name,
            position=position,
            priority_rank=parameters["rank"],
            status="queued" if name == first else "pending",
            attempts=0,
            progress=0.0,
            available_at=created_at if name == first else None,
            message_id=message_id if name == first else None,
            started_at=None,
            finished_at=None,
            error_code=None,
            error_message=None,
        )
        for position, name in enumerate(STAGE_NAMES)
    ]
    return CreatedJob(job, message_id, running, recent_means.get(connection, first))


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
        if stage.status in ("queued", "waiting", "running", "failed", "canceled"):
            return stage.name
    return None


def node_name(worker: str | None) -> str | None:
    """The Celery node (`name@host`) of a claim's worker id (`name@host:task-id`)."""
    return None if worker is None else worker.rsplit(":", 1)[0]


def stage_to_dict(stage: JobStage) -> dict[str, Any]:
    error = {"code": stage.error_code, "message": stage.error_message} if stage.error_code else None
    shown = {
        "name": stage.name,
        "status": stage.status,
        "attempts": stage.attempts,
        "worker": node_name(stage.worker),
        "progress": round(stage.progress, 1),
        "started_at": _iso(stage.started_at),
        "finished_at": _iso(stage.finished_at),
        "error": error,
    }
    if stage.name == "transcode":
        shown["parts"] = parts_to_dicts(stage)
    return shown


def parts_to_dicts(stage: JobStage) -> list[dict[str, Any]]:
    """The transcode's parts; a transcode of one part (run whole, with no rows of parts) shows
    itself as that part once it has started."""
    if stage.started_at is None:
        return []
    if not stage.job.parts:
        return [_part_to_dict(stage, index=0, kind="video", start=0.0, end=None)]
    return [
        _part_to_dict(part, index=part.index, kind=part.kind, start=part.start_seconds, end=part.end_seconds)
        for part in stage.job.parts
    ]


def _part_to_dict(
    work: LeasedWork, *, index: int, kind: str, start: float, end: float | None
) -> dict[str, Any]:
    return {
        "index": index,
        "kind": kind,
        "start_seconds": round(start, 3),
        "end_seconds": None if end is None else round(end, 3),
        "status": work.status,
        "attempts": work.attempts,
        "worker": node_name(work.worker),
        "progress": round(work.progress, 1),
        "started_at": _iso(work.started_at),
        "finished_at": _iso(work.finished_at),
    }


def job_to_dict(job: Job, links: PlaybackLinks | None = None) -> dict[str, Any]:
    """The job as clients and webhooks see it; with `links`, its result's published files as
    playback links (without, as stored: paths in the job's published folder)."""
    error = {"code": job.error_code, "message": job.error_message} if job.error_code else None
    return {
        "id": str(job.id),
        "status": job.status,
        "stage": current_stage(job),
        "progress": job_progress(job),
        "stages": [stage_to_dict(stage) for stage in job.stages],
        "source": public_source(job.source),
        "options": job.options,
        "result": links.present(job) if links is not None else job.result,
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
    """The job's result from what the upload and analyze stages recorded. Published files are
    named by their path in the job's published folder (`published`); PlaybackLinks.present
    makes links of them."""
    published = outputs.get("upload") or {}
    analyzed = outputs.get("analyze") or {}
    return {
        "published": {"bucket": published.get("bucket"), "prefix": published.get("prefix")},
        "playback_url": published.get("playback_url"),
        "dash_url": published.get("dash_url"),
        "renditions": published.get("renditions", []),
        "audio": published.get("audio", []),
        "subtitles": published.get("subtitles", []),
        "poster_url": published.get("poster_url"),
        "storyboard": published.get("storyboard"),
        "captions": analyzed.get("captions", []),
        "analysis": analyzed.get("analysis"),
    }
