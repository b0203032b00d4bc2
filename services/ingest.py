"""Bringing a job's source into the workspace and checking it is media we can work on."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.config import Settings
from services.errors import InvalidMedia
from services.fetching import fetch_url
from services.generation import generate_source
from services.probe import MediaInfo, probe, probe_limits
from services.s3source import fetch_s3_object
from services.stopping import StopSignal
from services.storage import make_s3_client
from services.workspace import Workspace


def ingest_source(
    source: dict[str, Any],
    job_id: uuid.UUID,
    workspace: Workspace,
    settings: Settings,
    *,
    attempt: int,
    on_progress: Callable[[float], None],
    stop: StopSignal,
) -> Path:
    """The local path of the job's source, fetching or generating it first (into this attempt's
    own folder) when it is remote."""
    if "upload" in source:
        return workspace.resolve(source["upload"]["path"])
    dest = workspace.stage_dir(job_id, "fetch", attempt) / "original"
    if "url" in source:
        fetch_url(
            source["url"],
            dest,
            max_bytes=settings.max_upload_bytes,
            connect_timeout=settings.fetch_connect_timeout,
            read_timeout=settings.fetch_read_timeout,
            allow_cidrs=settings.ssrf_allow_cidrs,
            stop=stop,
        )
        return dest
    if "s3" in source:
        fetch_s3_object(
            make_s3_client(settings),
            source["s3"]["bucket"],
            source["s3"]["key"],
            dest,
            allowed_buckets=settings.s3_source_buckets,
            max_bytes=settings.max_upload_bytes,
            on_progress=on_progress,
            should_stop=stop,
        )
        return dest
    if "generate" in source:
        # What resumes a paid generation is the job's, not one attempt's.
        state = workspace.source_dir(job_id) / "generation.operation.json"
        return generate_source(
            source["generate"], dest, state, settings, on_progress=on_progress, should_stop=stop
        )
    raise InvalidMedia(f"Unsupported source: {sorted(source)}")


def describe_source(path: Path, workspace: Workspace, settings: Settings) -> tuple[MediaInfo, dict[str, Any]]:
    """Probe the source within the probe limits (too long, too many pixels or streams: refused
    here, before any stage decodes it); the stage output records where it is and what it holds."""
    info = probe(path, probe_limits(settings), memory_limit_bytes=settings.ffmpeg_memory_limit_bytes)
    return info, {"path": workspace.relative(path), "bytes": path.stat().st_size, "media": asdict(info)}
