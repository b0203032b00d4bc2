"""Bearer API keys: who is calling, and which jobs they may see."""

from __future__ import annotations

import uuid

from flask import current_app, g, request

from api.db import db, lookup_connection
from api.errors import ApiError
from api.openapi import operation_of
from models import Job
from services.apikeys import Caller, RecentKeys
from services.jobs import get_job


def authenticate() -> None:
    """Who may call is declared beside each view (@operation access): public, any key, admin."""
    op = operation_of(current_app.view_functions.get(request.endpoint or ""))
    if op is not None and op.access == "public":
        return
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError("unauthorized", "Send your API key as 'Authorization: Bearer <key>'.")
    recent: RecentKeys = current_app.extensions["conveyor.keys"]
    caller = recent.find(lookup_connection, key.strip())
    if caller is None:
        raise ApiError("unauthorized", "This API key is unknown or revoked.")
    g.caller = caller
    if op is not None and op.access == "admin" and not caller.is_admin:
        raise ApiError("forbidden", "This route needs an admin key.")


def caller() -> Caller:
    key: Caller = g.caller
    return key


def visible_job(job_id: str) -> Job:
    """The job if the caller may see it; otherwise 404, never 403, so ids leak nothing."""
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        parsed = None
    job = get_job(db(), parsed) if parsed else None
    if job is None or (job.owner_id != caller().id and not caller().is_admin):
        raise ApiError("not_found", f"No job {job_id}.")
    return job
