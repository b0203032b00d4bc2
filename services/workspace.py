"""The workspace: where stages hand files to each other, under jobs/<job_id>/."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse


class Workspace:
    """A folder shared by every worker (one host, or a volume all workers mount)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_url(cls, url: str) -> Workspace:
        parsed = urlparse(url)
        if parsed.scheme != "file":
            raise ValueError(f"WORKSPACE_URL must be a file:// URL of a shared folder, not {url!r}")
        return cls(Path(unquote(parsed.path)))

    def job_dir(self, job_id: uuid.UUID) -> Path:
        return self.root / "jobs" / str(job_id)

    def source_dir(self, job_id: uuid.UUID) -> Path:
        return self.job_dir(job_id) / "source"

    def stage_dir(self, job_id: uuid.UUID, stage: str, attempt: int) -> Path:
        """One attempt's own output folder, new: an attempt writes only here, and no other
        attempt (an earlier one still stopping, a later one that took over) ever touches it."""
        path = self.job_dir(job_id) / stage / str(attempt)
        path.mkdir(parents=True)
        return path

    def incoming_path(self) -> Path:
        """A fresh file for an upload being received, before its job exists."""
        incoming = self.root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        return incoming / uuid.uuid4().hex

    def adopt_upload(self, incoming: Path, job_id: uuid.UUID, filename: str) -> Path:
        """Move a received upload into its job's source folder (a rename: same filesystem)."""
        target = self.source_dir(job_id) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        incoming.replace(target)
        return target

    def job_folders(self) -> dict[uuid.UUID, datetime]:
        """Every job folder, with when it last changed (its own entries, not files deeper down)."""
        jobs = self.root / "jobs"
        if not jobs.is_dir():
            return {}
        folders = {}
        for entry in jobs.iterdir():
            try:
                job_id = uuid.UUID(entry.name)
                folders[job_id] = datetime.fromtimestamp(entry.stat().st_mtime, UTC)
            except (ValueError, FileNotFoundError):  # not a job's, or removed meanwhile
                continue
        return folders

    def remove_job(self, job_id: uuid.UUID) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def resolve(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"{relative!r} is outside the workspace")
        return path
