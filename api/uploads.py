"""Uploads: the multipart body is streamed straight into the workspace, never held in memory."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import IO, Any

from flask import Blueprint, Request, current_app, g, request
from flask.typing import ResponseReturnValue
from werkzeug.utils import secure_filename

from api.auth import caller
from api.errors import ApiError
from api.jobs import idempotency_of, replay, submit_job
from api.limits import submit_limit
from api.openapi import operation
from api.responses import JobOut, UploadForm
from api.schemas import parse_options
from services.workspace import Workspace

bp = Blueprint("uploads", __name__)


class HashingFile(io.BufferedRandom):
    """A file that keeps the SHA-256 of what is written to it, for an upload whose request
    carries an Idempotency-Key: the body is compared without being read a second time."""

    def __init__(self, path: Path) -> None:
        super().__init__(io.FileIO(path, "w+"))
        self.sha256 = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        return super().write(data)


class StreamingUploadRequest(Request):
    """Writes each uploaded file part directly to a fresh file in the workspace, chunk by chunk."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        workspace: Workspace = current_app.extensions["conveyor.workspace"]
        path = workspace.incoming_path()
        g.setdefault("incoming_files", []).append(path)
        if "Idempotency-Key" in self.headers:
            hashing = HashingFile(path)
            g.setdefault("incoming_digests", {})[str(path)] = hashing.sha256
            return hashing
        return path.open("wb+")


def discard_incoming(_: BaseException | None = None) -> None:
    """Remove received files no job adopted (a rejected request must leave nothing behind)."""
    for path in g.pop("incoming_files", []):
        Path(path).unlink(missing_ok=True)


@bp.post("/uploads")
@operation(
    "Upload a video (multipart field `file`, optional field `options`) and start its job.",
    tag="jobs",
    body=UploadForm,
    multipart=True,
    responses={202: JobOut},
    errors=(403, 409, 413, 415, 422, 429),
    idempotent=True,
)
@submit_limit
def upload() -> ResponseReturnValue:
    if not (request.content_type or "").startswith("multipart/form-data"):
        raise ApiError("unsupported_media_type", "Send the video as multipart/form-data in the field 'file'.")
    file = request.files.get("file")
    if file is None or not file.filename:
        raise ApiError("invalid_request", "The multipart field 'file' is missing.")
    try:
        raw_options: Any = json.loads(request.form.get("options") or "{}")
    except json.JSONDecodeError as error:
        raise ApiError("invalid_options", f"The 'options' field is not valid JSON: {error.msg}.") from error
    options = parse_options(raw_options)
    incoming = Path(file.stream.name)  # type: ignore[union-attr]
    file.stream.close()
    size = incoming.stat().st_size
    if size == 0:
        raise ApiError("invalid_media", "The uploaded file is empty.")
    caller().entitlements.check_request({"upload": {}}, options)
    digest = g.get("incoming_digests", {}).get(str(incoming))
    idempotency = idempotency_of(file.filename, options, digest.digest() if digest else b"")
    replayed = replay(idempotency)
    if replayed is not None:
        return replayed  # the received copy is discarded with the request
    workspace: Workspace = current_app.extensions["conveyor.workspace"]
    job_id = uuid.uuid4()
    filename = secure_filename(file.filename) or "upload"
    path = workspace.adopt_upload(incoming, job_id, filename)
    source = {"upload": {"filename": file.filename, "bytes": size, "path": workspace.relative(path)}}
    try:
        answer = submit_job(source, options, job_id=job_id, idempotency=idempotency, incoming_bytes=size)
    except Exception:
        workspace.remove_job(job_id)
        raise
    if "Idempotent-Replayed" in answer.headers:
        workspace.remove_job(job_id)  # a concurrent duplicate made the job first
    return answer
