"""Where a job's objects live in the workspace: pure functions of ids, so every process that
shares nothing else still agrees on the names.

    jobs/<job_id>/source/<file>               an upload, written by the API before its job row
    jobs/<job_id>/<stage>/<attempt>/<file>    everything one attempt of one stage wrote
    jobs/<job_id>/<stage>/parts/<index>/<attempt>/<file>
                                              … and of one part of a stage (a transcode's)

An attempt writes only under its own prefix, so no attempt ever overwrites or deletes what an
earlier or a later one wrote; the stage's recorded output names the keys of the attempt that
succeeded, and later stages read exactly those.
"""

from __future__ import annotations

import re
import uuid
from pathlib import PurePosixPath

JOBS = "jobs"
# Not a stage's name: a retry removes what the stages it runs again wrote (`stage_prefix`),
# and the upload stage must never take the uploaded source with it.
UPLOADED = "source"
# What a key may hold: printable ASCII without backslashes or quotes, so a key is also a safe
# relative path on a file workspace and needs no escaping in a playlist or a log line.
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-/]")


def job_prefix(job_id: uuid.UUID) -> str:
    return f"{JOBS}/{job_id}/"


def stage_prefix(job_id: uuid.UUID, stage: str) -> str:
    """Every attempt of one stage."""
    return f"{JOBS}/{job_id}/{stage}/"


def attempt_prefix(job_id: uuid.UUID, stage: str, attempt: int) -> str:
    if attempt < 1:
        raise ValueError(f"attempts count from 1, not {attempt}")
    return f"{JOBS}/{job_id}/{stage}/{attempt}/"


def part_prefix(job_id: uuid.UUID, stage: str, index: int, attempt: int) -> str:
    """Everything one attempt of one part of a stage wrote (beside the stage's own attempts)."""
    if attempt < 1:
        raise ValueError(f"attempts count from 1, not {attempt}")
    return f"{JOBS}/{job_id}/{stage}/parts/{index}/{attempt}/"


def upload_key(job_id: uuid.UUID, filename: str) -> str:
    """The key of an uploaded file: its own name, made safe (the name is the client's)."""
    name = _UNSAFE.sub("_", PurePosixPath(filename.replace("\\", "/")).name).lstrip(".") or "upload"
    return f"{JOBS}/{job_id}/{UPLOADED}/{name[:150]}"


def check_key(key: str) -> str:
    """`key` if it names an object inside the workspace; ValueError for anything that could
    climb out of it or is not a plain relative name."""
    parts = key.split("/")
    if not key or key.startswith("/") or _UNSAFE.search(key) or any(p in ("", ".", "..") for p in parts[:-1]):
        raise ValueError(f"{key!r} is not a workspace key")
    if parts[-1] in (".", ".."):
        raise ValueError(f"{key!r} is not a workspace key")
    return key


def job_of(prefix: str) -> uuid.UUID | None:
    """The job a top-level prefix (``jobs/<job_id>/``) belongs to; None for anything else."""
    head, _, rest = prefix.partition("/")
    job, _, _ = rest.partition("/")
    if head != JOBS:
        return None
    try:
        return uuid.UUID(job)
    except ValueError:
        return None


def folders_of(keys: list[str], down_to: str) -> list[str]:
    """Every folder (``a/b/``) between `down_to` and each key, deepest first, `down_to` last.

    S3 proper has no folders, but SeaweedFS (the embedded server) keeps one per level until it
    is deleted by name, and a kept folder would stay listed as a prefix for ever."""
    folders: set[str] = {down_to}
    for key in keys:
        parent = key.rsplit("/", 1)[0] if "/" in key else ""
        while parent and (parent + "/").startswith(down_to) and parent + "/" != down_to:
            folders.add(parent + "/")
            parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
    return sorted(folders, key=lambda folder: (-folder.count("/"), folder))
