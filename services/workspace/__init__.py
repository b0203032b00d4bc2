"""The workspace: where stages hand their outputs to each other, under ``jobs/<job_id>/``.

One interface (`Workspace`, in base.py), two stores, chosen by ``WORKSPACE_URL``:

* ``s3://BUCKET/PREFIX`` (the default): an object store. Hosts share nothing but the
  PostgreSQL, Redis and S3 endpoints; nothing is mounted.
* ``file:///path``: a folder, for one host.

Every process keeps its own private scratch folder (scratch.py) for the files ffmpeg reads
and writes; no other process ever reads it. The one exception to reading from scratch is the
fetch stage's probe of an upload, which reads the object in place through a presigned URL of
the workspace bucket (`Workspace.readable`). Workspace failures (a bucket missing, the store
unreachable, a full disk) are `storage_failed`, transient: another attempt may well succeed.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from services.config import Settings
from services.workspace.base import (
    IncompleteUpload,
    ObjectWriter,
    Readable,
    StopCheck,
    StoredObject,
    Workspace,
    never,
)
from services.workspace.files import FileWorkspace
from services.workspace.s3 import S3Workspace


def open_workspace(settings: Settings, *, timeout: float = 60.0, attempts: int = 5) -> Workspace:
    """The workspace WORKSPACE_URL names; `timeout` and `attempts` bound each S3 request."""
    parsed = urlparse(settings.workspace_url)
    if parsed.scheme == "file" and parsed.path:
        return FileWorkspace(Path(unquote(parsed.path)))
    if parsed.scheme == "s3" and parsed.netloc:
        return S3Workspace.from_settings(
            settings, bucket=parsed.netloc, prefix=parsed.path.strip("/"), timeout=timeout, attempts=attempts
        )
    raise ValueError(
        f"WORKSPACE_URL must be s3://BUCKET/PREFIX or file:///PATH, not {settings.workspace_url!r}"
    )


__all__ = [
    "FileWorkspace",
    "IncompleteUpload",
    "ObjectWriter",
    "Readable",
    "S3Workspace",
    "StopCheck",
    "StoredObject",
    "Workspace",
    "never",
    "open_workspace",
]
