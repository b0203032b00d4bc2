"""Uploads: the multipart body is streamed straight into the workspace, never held in memory.

The job's id is chosen before the first byte arrives, so the file goes to its final key
(``jobs/<job_id>/source/<name>``) as an S3 multipart upload: no copy, no rename, memory
bounded by a few parts. Nothing is visible under the key until the request has been accepted;
a refused request (bad options, an empty file, a client gone mid-body) aborts the upload and
leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import IO, Any, cast

from flask import Blueprint, Request, current_app, g, request
from flask.typing import ResponseReturnValue

from api.auth import caller
from api.errors import ApiError
from api.jobs import idempotency_of, replay, submit_job
from api.limits import submit_limit
from api.openapi import operation
from api.responses import JobOut, UploadForm
from api.schemas import parse_options
from services.workspace import ObjectWriter, Workspace
from services.workspace.keys import upload_key

bp = Blueprint("uploads", __name__)


class UploadStream:
    """What werkzeug's form parser writes one file part into: the workspace writer of its key.
    For a request with an Idempotency-Key it also keeps the SHA-256 of what passes: the body
    is compared with an earlier request's without being read a second time."""

    def __init__(self, writer: ObjectWriter, *, hashing: bool) -> None:
        self.writer = writer
        self.sha256 = hashlib.sha256() if hashing else None

    def write(self, data: bytes) -> int:
        self.writer.write(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        # The parser rewinds a part's container when the part ends; there is nothing to rewind.
        return 0

    def tell(self) -> int:
        return self.writer.size

    def close(self) -> None:
        # The view commits what it accepts; discard_uploads aborts everything else.
        pass


def _workspace() -> Workspace:
    workspace: Workspace = current_app.extensions["conveyor.workspace"]
    return workspace


class StreamingUploadRequest(Request):
    """Writes each uploaded file part directly into the workspace, chunk by chunk."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        job_id: uuid.UUID = g.setdefault("upload_job_id", uuid.uuid4())
        writers: list[ObjectWriter] = g.setdefault("upload_writers", [])
        key = upload_key(job_id, filename or "upload")
        if any(writer.key == key for writer in writers):  # another part of the same name
            key = f"{key}.{len(writers)}"
        writer = _workspace().open_writer(key)
        writers.append(writer)
        return cast(IO[bytes], UploadStream(writer, hashing="Idempotency-Key" in self.headers))


def discard_uploads(_: BaseException | None = None) -> None:
    """Abort every upload of the request that no job adopted (a refused request leaves nothing)."""
    for writer in g.pop("upload_writers", []):
        writer.abort()


@bp.post("/uploads")
@operation(
    "Upload a video (multipart field `file`, optional field `options`) and start its job.",
    tag="jobs",
    body=UploadForm,
    multipart=True,
    responses={202: JobOut},
    errors=(403, 409, 413, 415, 422, 429, 503),
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
    stream = cast(UploadStream, file.stream)
    writer = stream.writer
    if writer.size == 0:
        raise ApiError("invalid_media", "The uploaded file is empty.")
    caller().entitlements.check_request({"upload": {}}, options)
    digest = stream.sha256.digest() if stream.sha256 is not None else b""
    idempotency = idempotency_of(file.filename, options, digest)
    replayed = replay(idempotency)
    if replayed is not None:
        return replayed  # the upload, never committed, is aborted with the request
    size = writer.commit()
    source = {"upload": {"filename": file.filename, "bytes": size, "key": writer.key}}
    try:
        answer = submit_job(
            source, options, job_id=g.upload_job_id, idempotency=idempotency, incoming_bytes=size
        )
    except Exception:
        _workspace().remove(writer.key)
        raise
    if "Idempotent-Replayed" in answer.headers:
        _workspace().remove(writer.key)  # a concurrent duplicate made the job first
    return answer
