"""Bringing a job's source into the workspace and checking it is media we can work on.

A remote source (URL, S3 object, Veo) is streamed into the workspace under the fetch
attempt's own key and, in the same pass, into the attempt's scratch, where ffprobe reads it;
an upload is already in the workspace (the API streamed it there) and ffprobe reads it where
it lies (`Workspace.readable`): on the object store through a presigned URL, with ranged
reads of only what it needs, so a 2 GB upload costs the fetch host neither 2 GB of transfer
nor 2 GB of scratch. Nothing is visible under the key until the whole source has arrived.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from services.config import Settings
from services.errors import InvalidMedia
from services.fetching import fetch_url
from services.media.probe import MediaInfo, probe, probe_limits
from services.s3source import fetch_s3_object
from services.stopping import StopSignal
from services.storage import make_s3_client
from services.workspace import ObjectWriter, Readable, Workspace
from services.workspace.keys import attempt_prefix

if TYPE_CHECKING:
    from services.generation import ResumeState

REMOTE_KINDS = ("url", "s3", "generate")


class SourceCopy:
    """The source as it arrives, written twice: into the workspace for the stages after this
    one, and into scratch for the probe. Committed on a clean exit, discarded otherwise."""

    def __init__(self, local: Path, writer: ObjectWriter) -> None:
        self.local, self.writer = local, writer
        self._file: IO[bytes] = local.open("wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.writer.write(data)

    def __enter__(self) -> SourceCopy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._file.close()  # may fail too (a full scratch disk on the last flush)
        except BaseException:
            self.writer.abort()
            raise
        if error is None:
            self.writer.commit()
        else:
            self.writer.abort()


@dataclass(frozen=True)
class Ingested:
    key: str  # the source in the workspace
    readable: Readable  # where the probe reads it


def ingest_source(
    source: dict[str, Any],
    job_id: uuid.UUID,
    attempt: int,
    workspace: Workspace,
    scratch: Path,
    settings: Settings,
    *,
    resume: ResumeState,
    on_progress: Callable[[float], None],
    stop: StopSignal,
) -> Ingested:
    """The job's source in the workspace, fetched or generated first when remote, and where the
    probe reads it."""
    if "upload" in source:
        key = str(source["upload"]["key"])
        return Ingested(key, workspace.readable(key, scratch / "source"))
    kind = next((kind for kind in REMOTE_KINDS if kind in source), None)
    if kind is None:
        raise InvalidMedia(f"Unsupported source: {sorted(source)}")
    key = attempt_prefix(job_id, "fetch", attempt) + "original"
    local = scratch / "original"
    with SourceCopy(local, workspace.open_writer(key, should_stop=stop)) as copy:
        if kind == "url":
            fetch_url(
                source["url"],
                copy,
                max_bytes=settings.max_upload_bytes,
                connect_timeout=settings.fetch_connect_timeout,
                read_timeout=settings.fetch_read_timeout,
                allow_cidrs=settings.ssrf_allow_cidrs,
                stop=stop,
            )
        elif kind == "s3":
            fetch_s3_object(
                make_s3_client(settings),
                source["s3"]["bucket"],
                source["s3"]["key"],
                copy,
                allowed_buckets=settings.s3_source_buckets,
                max_bytes=settings.max_upload_bytes,
                on_progress=on_progress,
                should_stop=stop,
            )
        else:
            # Imported here, not at the top: google-genai's models cost every process that
            # imports them about 25 MB, and only a generated source needs them.
            from services.generation import generate_source

            copy.write(
                generate_source(
                    source["generate"], settings, resume, on_progress=on_progress, should_stop=stop
                )
            )
    return Ingested(key, Readable(local, local.stat().st_size))


def describe_source(ingested: Ingested, settings: Settings) -> tuple[MediaInfo, dict[str, Any]]:
    """Probe the source within the probe limits (too long, too many pixels or streams: refused
    here, before any stage decodes it); the stage output records where it is and what it holds."""
    info = probe(
        ingested.readable.location,
        probe_limits(settings),
        memory_limit_bytes=settings.ffmpeg_memory_limit_bytes,
    )
    return info, {"key": ingested.key, "bytes": ingested.readable.size, "media": asdict(info)}
