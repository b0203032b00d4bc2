"""GET /api/v1/playback/<job>/<token>/<path>: a job's published files, for players.

Playlists (and storyboards) are read from the delivery bucket as the upload stage stored
them, with relative URIs, and served with each URI made reachable: another playlist stays
relative (it resolves to this route, under the same token), anything else (segments, init
files, keys, subtitles, sprites) becomes a freshly presigned URL of the bucket (or its
public base URL). Any other file answers a redirect to the same. So a link given out once
plays for as long as the job's outputs exist, whatever S3_PRESIGN_SECONDS is."""

from __future__ import annotations

import dataclasses
import uuid

from botocore.exceptions import BotoCoreError, ClientError
from flask import Blueprint, Flask, Response, current_app, redirect
from flask.typing import ResponseReturnValue

from api.auth import visible_job
from api.db import db
from api.errors import ApiError
from api.openapi import operation
from api.responses import JobResult, send
from models import Job
from services.config import Settings
from services.playback import PlaybackLinks, is_published_path, resolve
from services.storage import CONTENT_TYPES, REWRITERS, Delivery, make_s3_client

bp = Blueprint("playback", __name__)
# Players read a playlist once and follow it; the signed URLs inside outlive this by far.
PLAYLIST_CACHE = "private, max-age=60"
# The URL is the credential, so any page may play it (hls.js on another site fetches with CORS).
CORS = {"Access-Control-Allow-Origin": "*"}


def init_playback(app: Flask, settings: Settings) -> None:
    app.extensions["conveyor.links"] = PlaybackLinks.from_settings(settings)
    app.extensions["conveyor.delivery"] = Delivery(
        client=make_s3_client(settings),
        bucket=settings.s3_bucket,
        public_base_url=settings.s3_public_base_url,
        presign_seconds=settings.s3_presign_seconds,
    )


def _published(job_id: str, token: str, path: str) -> tuple[Job, Delivery, str]:
    """The job, its delivery bucket, and the object's key; 404 for anything not so."""
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        parsed = None
    job = db().get(Job, parsed) if parsed else None
    links: PlaybackLinks = current_app.extensions["conveyor.links"]
    published = (job.result or {}).get("published") if job else None
    if job is None or not published or not links.accepts(job, token) or not is_published_path(path):
        raise ApiError("not_found", "No such playback file.")
    delivery: Delivery = current_app.extensions["conveyor.delivery"]
    return job, dataclasses.replace(delivery, bucket=published["bucket"]), published["prefix"]


@bp.get("/playback/<job_id>/<token>/<path:path>")
@operation(
    "A published file of a job: playlists served with fresh signed URLs, other files redirected.",
    access="public",
    tag="playback",
    responses={200: "application/vnd.apple.mpegurl", 302: "text/plain"},
    description=(
        "The URL is the authorization (players cannot send a Bearer header): it comes from the job's"
        " result and never expires; POST /jobs/<id>/playback/revoke makes a job's links invalid."
    ),
)
def published_file(job_id: str, token: str, path: str) -> ResponseReturnValue:
    _, delivery, prefix = _published(job_id, token, path)
    suffix = "." + path.rsplit(".", 1)[-1] if "." in path else ""
    rewrite = REWRITERS.get(suffix)
    if rewrite is None:
        response = redirect(delivery.url(f"{prefix}/{path}"), 302)
        response.headers.update(CORS)
        return response
    try:
        stored = delivery.client.get_object(Bucket=delivery.bucket, Key=f"{prefix}/{path}")["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            raise ApiError("not_found", "No such playback file.") from exc
        raise ApiError("unavailable", "The delivery bucket did not answer.") from exc
    except BotoCoreError as exc:
        raise ApiError("unavailable", "The delivery bucket did not answer.") from exc

    def reachable(uri: str) -> str:
        if uri.endswith(".m3u8"):
            return uri
        return delivery.url(f"{prefix}/{resolve(path, uri)}")

    body = rewrite(stored.decode(), reachable)
    headers = {"Cache-Control": PLAYLIST_CACHE, **CORS}
    return Response(body, mimetype=CONTENT_TYPES[suffix], headers=headers)


@bp.post("/jobs/<job_id>/playback/revoke")
@operation(
    "Make every playback link of the job given out so far invalid; the answer has the new ones.",
    tag="jobs",
    responses={200: JobResult},
)
def revoke(job_id: str) -> ResponseReturnValue:
    job = visible_job(job_id)
    session = db()
    job.playback_revision += 1
    session.commit()
    links: PlaybackLinks = current_app.extensions["conveyor.links"]
    result = links.present(job)
    if result is None:
        raise ApiError("not_found", f"Job {job_id} has no result yet (status {job.status}).")
    return send(JobResult, result)
