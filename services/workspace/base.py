"""The workspace's interface and the values it trades in (see the package docstring)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

StopCheck = Callable[[], bool]


def never() -> bool:
    return False


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the workspace, as the keys in services.workspace.keys
    size: int
    modified: datetime


@dataclass(frozen=True)
class Readable:
    """Where a probe reads an object: a file in the caller's scratch, or the object where it
    lies, as a presigned URL of the workspace bucket (ffprobe reads it with ranged GETs); and
    the object's size."""

    location: Path | str
    size: int


@dataclass(frozen=True)
class IncompleteUpload:
    """A write that was started and neither completed nor aborted (its writer was killed)."""

    key: str
    started: datetime
    upload_id: str


class ObjectWriter(Protocol):
    """An object being written in pieces. Nothing is visible under its key until `commit`; an
    `abort`, or a process killed before the commit, leaves nothing any reader can see."""

    key: str
    size: int

    def write(self, data: bytes) -> None: ...

    def commit(self) -> int:
        """Make the object visible; its size."""
        ...

    def abort(self) -> None: ...

    def __enter__(self) -> ObjectWriter: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class CommitOnExit:
    """An ObjectWriter's `with` block: committed when it ends cleanly, aborted when it raises."""

    _done: bool

    def commit(self) -> int:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if error is not None:
            self.abort()
        elif not self._done:
            self.commit()


class Workspace(Protocol):
    """What every stage, the API and the retention task do with the workspace."""

    url: str

    def open_writer(self, key: str, *, should_stop: StopCheck = never) -> ObjectWriter: ...

    def put_file(self, path: Path, key: str, *, should_stop: StopCheck = never) -> None: ...

    def get_file(self, key: str, dest: Path, *, should_stop: StopCheck = never) -> Path:
        """A local copy of the object at `dest` (in the caller's scratch folder)."""
        ...

    def readable(self, key: str, dest: Path) -> Readable:
        """Where a probe may read the object: in place when the store serves ranged reads over
        HTTP (only what the probe needs crosses the network), else a local copy at `dest`."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """A small object (a playlist), whole."""
        ...

    def objects(self, prefix: str) -> list[StoredObject]: ...

    def exists(self, prefix: str) -> bool:
        """Whether any object's key starts with `prefix`."""
        ...

    def remove(self, prefix: str) -> int:
        """Delete every object under `prefix`; how many there were."""
        ...

    def job_prefixes(self, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
        """Up to `limit` jobs that have objects, in key order, after the job `after`."""
        ...

    def incomplete_uploads(self) -> list[IncompleteUpload]: ...

    def abort_upload(self, upload: IncompleteUpload) -> None: ...

    def check(self) -> None:
        """Raise StorageFailed unless the workspace can be written now."""
        ...

    def export(
        self, stored: StoredObject, client: Any, bucket: str, dest_key: str, extra: dict[str, str]
    ) -> None:
        """Copy one object to `bucket` through `client` (the delivery's): server-side when the
        bucket is in the same store, so no media byte passes through this process; by
        streaming otherwise."""
        ...
