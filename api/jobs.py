"""Jobs: submit from a URL, list, read, read the result, follow live, cancel, retry."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, current_app, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError

from api.auth import caller, visible_job
from api.db import db, lookup_connection, sessions, single_statement
from api.errors import ApiError
from api.limits import submit_limit
from api.openapi import operation
from api.responses import JobEventOut, JobListQuery, JobOut, JobPage, JobResult, send
from api.schemas import JobRequest, parse_job_request, parse_model
from models import Job
from services.contract import Dispatch, request_cancel
from services.entitlements import check_quotas
from services.events import EventFeed, parse_last_event_id, stream_job_events
from services.idempotency import check_key, fingerprint, replayed_job
from services.jobs import CreatedJob, create_job, get_job, job_to_dict
from services.operations import Cursor, list_jobs, retry_inputs, retry_job
from services.playback import PlaybackLinks
from services.queue_stats import Waiting, waiting_position
from services.workspace import Workspace
from tasks.pipeline import dispatch, dispatch_all

bp = Blueprint("jobs", __name__)


def links() -> PlaybackLinks:
    found: PlaybackLinks = current_app.extensions["conveyor.links"]
    return found


def job_body(job: Job, waiting: Waiting | None = None) -> dict[str, Any]:
    """The job as services present it, plus its place in line while a stage of it waits
    (looked up unless the caller already knows it)."""
    body = job_to_dict(job, links())
    if waiting is None and job.status in ("queued", "running"):
        waiting = waiting_position(db(), job)
    body["position"] = waiting.position if waiting else None
    body["estimated_wait_seconds"] = waiting.estimated_wait_seconds if waiting else None
    return body


def idempotency_of(*request_parts: Any) -> tuple[str, str] | None:
    """(key, request fingerprint) when the request carries an Idempotency-Key."""
    header = request.headers.get("Idempotency-Key")
    if header is None:
        return None
    return check_key(header), fingerprint(request.path, *request_parts)


def replay(idempotency: tuple[str, str] | None) -> Response | None:
    """The answer about the job an earlier request with this key made, if there was one."""
    if idempotency is None:
        return None
    with lookup_connection() as connection:
        job_id = replayed_job(connection, caller().id, *idempotency)
    job = get_job(db(), job_id) if job_id else None
    if job is None:
        return None
    response = send(JobOut, job_body(job), 202)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _create(
    source: dict[str, Any],
    options: dict[str, Any],
    job_id: uuid.UUID | None,
    idempotency: tuple[str, str] | None,
    incoming_bytes: int,
) -> CreatedJob:
    who = caller()
    if not who.entitlements.has_quotas:
        # The hot path: one statement in autocommit.
        return create_job(
            single_statement(),
            owner_id=who.id,
            source=source,
            options=options,
            job_id=job_id,
            idempotency=idempotency,
        )
    session = db()
    check_quotas(session, who.id, who.entitlements, incoming_bytes)
    created = create_job(
        session, owner_id=who.id, source=source, options=options, job_id=job_id, idempotency=idempotency
    )
    session.commit()
    return created


def submit_job(
    source: dict[str, Any],
    options: dict[str, Any],
    *,
    job_id: uuid.UUID | None = None,
    idempotency: tuple[str, str] | None = None,
    incoming_bytes: int = 0,
) -> Response:
    """Commit the job first, then send: if the broker is down the sweeper sends it later.
    With an Idempotency-Key, a concurrent duplicate that lost the race answers the winner's job."""
    try:
        created = _create(source, options, job_id, idempotency, incoming_bytes)
    except IntegrityError:
        db().rollback()
        replayed = replay(idempotency)
        if replayed is None:
            raise
        return replayed
    ahead = dispatch(Dispatch(created.job.id, "fetch", options.get("priority", "normal"), created.message_id))
    # Unsent (the broker is down), the place in line is counted in PostgreSQL instead.
    waiting = created.waiting(ahead) if ahead is not None else None
    response = send(JobOut, job_body(created.job, waiting), 202)
    response.headers["Location"] = f"/api/v1/jobs/{created.job.id}"
    return response


@bp.post("/jobs")
@operation(
    "Submit a job from a URL, an S3 object or a generation prompt.",
    tag="jobs",
    body=JobRequest,
    responses={202: JobOut},
    errors=(403, 409, 429),
    idempotent=True,
)
@submit_limit
def create() -> ResponseReturnValue:
    source, options = parse_job_request(request.get_json(silent=True))
    caller().entitlements.check_request(source, options)
    idempotency = idempotency_of(source, options)
    return replay(idempotency) or submit_job(source, options, idempotency=idempotency)


@bp.get("/jobs")
@operation(
    "The caller's jobs (every job for an admin key), newest first, a page at a time.",
    tag="jobs",
    query=JobListQuery,
    responses={200: JobPage},
)
def index() -> ResponseReturnValue:
    query = parse_model(JobListQuery, request.args.to_dict())
    try:
        after = Cursor.decode(query.cursor) if query.cursor else None
    except ValueError as error:
        raise ApiError("invalid_request", f"cursor: {error}") from error
    jobs, following = list_jobs(
        db(),
        owner_id=None if caller().is_admin else caller().id,
        status=query.status,
        created_after=query.created_after,
        limit=query.limit,
        after=after,
    )
    body = {
        "jobs": [job_to_dict(job, links()) for job in jobs],
        "next_cursor": following and following.encode(),
    }
    return send(JobPage, body)


@bp.get("/jobs/<job_id>")
@operation("A job, with its place in line while it waits.", tag="jobs", responses={200: JobOut})
def show(job_id: str) -> ResponseReturnValue:
    return send(JobOut, job_body(visible_job(job_id)))


@bp.get("/jobs/<job_id>/result")
@operation(
    "Playback URL, renditions and analysis of a succeeded job (404 before).",
    tag="jobs",
    responses={200: JobResult},
)
def result(job_id: str) -> ResponseReturnValue:
    job = visible_job(job_id)
    result = links().present(job)
    if result is None:
        raise ApiError("not_found", f"Job {job_id} has no result yet (status {job.status}).")
    return send(JobResult, result)


@bp.get("/jobs/<job_id>/events")
@operation(
    "Server-Sent Events of the job's status and progress until it ends.",
    tag="jobs",
    responses={200: "text/event-stream"},
    extra_models=(JobEventOut,),
    description=(
        "Each message has `id` (resume from it with the Last-Event-ID header), `event` (the type:"
        " job.queued, stage.started, stage.progress, stage.succeeded, stage.retrying, job.succeeded,"
        " job.failed, job.canceled, …) and `data`, one JobEventOut as JSON. The stream ends after"
        " the job's last event, or after ten minutes (reconnect with Last-Event-ID)."
    ),
)
def events(job_id: str) -> ResponseReturnValue:
    job = visible_job(job_id)
    after = parse_last_event_id(request.headers.get("Last-Event-ID"))
    feed: EventFeed = current_app.extensions["conveyor.feed"]
    stream = stream_job_events(sessions(), feed, job.id, after)
    # No buffering anywhere on the way: each event must reach the client when it happens.
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream, mimetype="text/event-stream", headers=headers)


@bp.post("/jobs/<job_id>/cancel")
@operation(
    "Stop the job: a running ffmpeg is terminated, later stages never run.",
    tag="jobs",
    responses={202: JobOut},
    errors=(409,),
)
def cancel(job_id: str) -> ResponseReturnValue:
    job = visible_job(job_id)
    session = db()
    requested = request_cancel(session, job.id)
    if not requested.applied:
        raise ApiError("conflict", f"Job {job_id} has already ended ({job.status}).")
    session.commit()
    dispatch_all(requested.dispatches)
    session.refresh(job)
    return send(JobOut, job_body(job), 202)


@bp.post("/jobs/<job_id>/retry")
@operation(
    "Re-run your failed job from its failed stage, keeping what earlier stages produced.",
    tag="jobs",
    responses={202: JobOut},
    errors=(409,),
)
def retry(job_id: str) -> ResponseReturnValue:
    return retry_response(job_id)


def retry_response(job_id: str) -> ResponseReturnValue:
    """Shared by the owner's route and the admin's POST /queue/retry/<id> (visible_job decides)."""
    job = visible_job(job_id)
    workspace: Workspace = current_app.extensions["conveyor.workspace"]
    if job.status == "failed" and not all(workspace.exists(needed) for needed in retry_inputs(job)):
        raise ApiError("conflict", "The job's workspace files were cleaned away; submit it again.")
    session = db()
    restart = retry_job(session, job.id)
    session.commit()
    dispatch(restart)
    session.refresh(job)
    return send(JobOut, job_body(job), 202)
