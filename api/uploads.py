"""Uploads: the multipart body is streamed straight into the workspace, never held in memory."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import IO, Any

from flask import Blueprint, Request, current_app, g, request
from flask.typing import ResponseReturnValue
from werkzeug.utils import secure_filename

from api.errors import ApiError
from api.jobs import submit_job
from api.limits import submit_limit
from api.openapi import operation
from api.responses import JobOut, UploadForm
from api.schemas import parse_options
from services.workspace import Workspace

bp = Blueprint("uploads", __name__)


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
    errors=(413, 415, 422, 429),
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
    workspace: Workspace = current_app.extensions["conveyor.workspace"]
    job_id = uuid.uuid4()
    filename = secure_filename(file.filename) or "upload"
    path = workspace.adopt_upload(incoming, job_id, filename)
    source = {"upload": {"filename": file.filename, "bytes": size, "path": workspace.relative(path)}}
    try:
        return submit_job(source, options, job_id=job_id)
    except Exception:
        workspace.remove_job(job_id)
        raise
