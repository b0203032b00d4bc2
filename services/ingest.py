"""Bringing a job's source into the workspace and checking it is media we can work on."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.config import Settings
from services.errors import InvalidMedia
from services.fetching import fetch_url
from services.probe import MediaInfo, probe
from services.workspace import Workspace


def ingest_source(
    source: dict[str, Any], job_id: uuid.UUID, workspace: Workspace, settings: Settings
) -> Path:
    """The local path of the job's source, fetching it first when it is remote."""
    if "upload" in source:
        return workspace.resolve(source["upload"]["path"])
    if "url" in source:
        dest = workspace.source_dir(job_id) / "original"
        fetch_url(
            source["url"],
            dest,
            max_bytes=settings.max_upload_bytes,
            connect_timeout=settings.fetch_connect_timeout,
            read_timeout=settings.fetch_read_timeout,
            allow_cidrs=settings.ssrf_allow_cidrs,
        )
        return dest
    raise InvalidMedia(f"Unsupported source: {sorted(source)}")


def describe_source(path: Path, workspace: Workspace) -> tuple[MediaInfo, dict[str, Any]]:
    """Probe the source; the stage output records where it is and what it holds."""
    info = probe(path)
    return info, {"path": workspace.relative(path), "bytes": path.stat().st_size, "media": asdict(info)}
