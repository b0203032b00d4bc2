"""The workspace as a folder (``file:///path``), for one host.

A write goes to ``.incomplete/`` under the root and is renamed into place when complete (one
filesystem, so the rename is atomic): a reader never sees half a file, and what a killed
writer leaves is all in one folder the retention task reads without walking the jobs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from services.errors import StorageFailed
from services.workspace.base import CommitOnExit, IncompleteUpload, Readable, StopCheck, StoredObject, never
from services.workspace.keys import JOBS, check_key
from services.workspace.streams import full_disk_is_transient

INCOMPLETE = ".incomplete"
# An incomplete file is named "<random>.<its key, '/' as '~'>": no key holds '~' (keys.py).
_SLASH = "~"


class FileWriter(CommitOnExit):
    def __init__(self, incoming: Path, target: Path, key: str, should_stop: StopCheck) -> None:
        self.key, self.size = key, 0
        self._incoming, self._target = incoming, target
        self._should_stop = should_stop
        self._file: IO[bytes] | None = None
        self._done = False
        with full_disk_is_transient("The workspace folder"):
            incoming.parent.mkdir(parents=True, exist_ok=True)
            self._file = incoming.open("wb")

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError("write after commit or abort")
        with full_disk_is_transient("The workspace folder"):
            self._file.write(data)
        self.size += len(data)

    def commit(self) -> int:
        if self._file is None:
            raise ValueError("commit after commit or abort")
        try:
            with full_disk_is_transient("The workspace folder"):
                self._file.close()
                self._file = None
                self._target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._incoming, self._target)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.size

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._file is not None:
            self._file.close()
            self._file = None
        self._incoming.unlink(missing_ok=True)


def _link_or_copy(source: Path, dest: Path) -> None:
    """A hard link where both are on one filesystem (no bytes copied; objects are never changed
    in place, only replaced, so the two names never diverge), a copy otherwise."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


class FileWorkspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri() if root.is_absolute() else str(root)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _modified(self, path: Path) -> datetime:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)

    def _incoming(self, key: str) -> Path:
        return self.root / INCOMPLETE / f"{uuid.uuid4().hex}.{key.replace('/', _SLASH)}"[:255]

    def open_writer(self, key: str, *, should_stop: StopCheck = never) -> FileWriter:
        return FileWriter(self._incoming(key), self.path(key), key, should_stop)

    def put_file(self, path: Path, key: str, *, should_stop: StopCheck = never) -> None:
        target = self.path(key)
        incoming = self._incoming(key)
        with full_disk_is_transient("The workspace folder"):
            incoming.parent.mkdir(parents=True, exist_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(path, incoming)
            os.replace(incoming, target)

    def get_file(self, key: str, dest: Path, *, should_stop: StopCheck = never) -> Path:
        source = self.path(key)
        if not source.is_file():
            raise StorageFailed(f"Reading {key} failed: the workspace holds no such file (cleaned away?).")
        with full_disk_is_transient("The scratch folder"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(source, dest)
        return dest

    def readable(self, key: str, dest: Path) -> Readable:
        copy = self.get_file(key, dest)  # a hard link: no byte is copied
        return Readable(copy, copy.stat().st_size)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StorageFailed(f"Reading {key} failed: the workspace holds no such file.") from exc

    def objects(self, prefix: str) -> list[StoredObject]:
        start = self.path(prefix)
        candidates = [start] if start.is_file() else sorted(p for p in start.rglob("*") if p.is_file())
        found = []
        for path in candidates:
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                stat = path.stat()
                key = path.relative_to(self.root).as_posix()
                found.append(StoredObject(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)))
        return found

    def exists(self, prefix: str) -> bool:
        start = self.path(prefix)
        return start.is_file() or (start.is_dir() and any(p.is_file() for p in start.rglob("*")))

    def remove(self, prefix: str) -> int:
        start = self.path(prefix)
        if start.is_file():
            start.unlink(missing_ok=True)
            return 1
        count = len(self.objects(prefix))
        shutil.rmtree(start, ignore_errors=True)
        return count

    def job_prefixes(self, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
        jobs = self.root / JOBS
        if not jobs.is_dir():
            return []
        found = []
        for entry in os.scandir(jobs):
            with contextlib.suppress(ValueError):
                found.append(uuid.UUID(entry.name))
        names = sorted(found, key=str)
        return [job for job in names if after is None or str(job) > str(after)][:limit]

    def incomplete_uploads(self) -> list[IncompleteUpload]:
        folder = self.root / INCOMPLETE
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            key = path.name.partition(".")[2].replace(_SLASH, "/")
            with contextlib.suppress(FileNotFoundError):
                found.append(IncompleteUpload(key, self._modified(path), path.name))
        return found

    def abort_upload(self, upload: IncompleteUpload) -> None:
        (self.root / INCOMPLETE / upload.upload_id).unlink(missing_ok=True)

    def check(self) -> None:
        if not self.root.is_dir():
            raise StorageFailed(f"The workspace folder {self.root} does not exist.")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageFailed(f"The workspace folder {self.root} cannot be written.")

    def export(
        self, stored: StoredObject, client: Any, bucket: str, dest_key: str, extra: dict[str, str]
    ) -> None:
        client.upload_file(str(self.path(stored.key)), bucket, dest_key, ExtraArgs=extra)
