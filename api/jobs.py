"""Jobs: submit from a URL, read, read the result, cancel."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from api.auth import caller, visible_job
from api.db import db
from api.errors import ApiError
from api.schemas import parse_job_request
from services.jobs import create_job, job_to_dict
from services.stages import request_cancel
from tasks.pipeline import dispatch

bp = Blueprint("jobs", __name__)


def submit_job(
    source: dict[str, Any], options: dict[str, Any], job_id: uuid.UUID | None = None
) -> ResponseReturnValue:
    """Commit the job first, then send: if the broker is down the sweeper sends it later."""
    session = db()
    job = create_job(session, owner_id=caller().id, source=source, options=options, job_id=job_id)
    session.commit()
    dispatch(job.id, "fetch", options.get("priority", "normal"))
    session.refresh(job)
    response = jsonify(job_to_dict(job))
    response.status_code = 202
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return response


@bp.post("/jobs")
def create() -> ResponseReturnValue:
    source, options = parse_job_request(request.get_json(silent=True))
    return submit_job(source, options)


@bp.get("/jobs/<job_id>")
def show(job_id: str) -> ResponseReturnValue:
    return jsonify(job_to_dict(visible_job(job_id)))


@bp.get("/jobs/<job_id>/result")
def result(job_id: str) -> ResponseReturnValue:
    job = visible_job(job_id)
    if job.result is None:
        raise ApiError("not_found", f"Job {job_id} has no result yet (status {job.status}).")
    return jsonify(job.result)


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> ResponseReturnValue:
    job = visible_job(job_id)
    session = db()
    if not request_cancel(session, job):
        raise ApiError("conflict", f"Job {job_id} has already ended ({job.status}).")
    session.commit()
    if job.status == "canceled":
        dispatch(job.id, "notify", job.options.get("priority", "normal"))
    session.refresh(job)
    response = jsonify(job_to_dict(job))
    response.status_code = 202
    return response
