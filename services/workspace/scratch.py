"""Scratch: a process's private folder for the files ffmpeg reads and writes.

Each process makes its own, a fresh folder under SCRATCH_DIR (default: the system's temporary
folder), on first use and again after a fork, so no two processes (a worker's prefork
children included) ever share one, and nothing another process writes is ever read from it.
Each stage attempt works in a folder of its own inside it, removed when the attempt ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from services.workspace.base import StopCheck, Workspace, never
from services.workspace.streams import full_disk_is_transient


class Scratch:
    def __init__(self, parent: Path | None = None) -> None:
        self.parent = parent
        self._root: Path | None = None
        self._pid = 0

    @property
    def root(self) -> Path:
        if self._root is None or self._pid != os.getpid():
            with full_disk_is_transient("The scratch folder"):
                if self.parent is not None:
                    self.parent.mkdir(parents=True, exist_ok=True)
                self._root = Path(tempfile.mkdtemp(prefix=f"conveyor-{os.getpid()}-", dir=self.parent))
            self._pid = os.getpid()
        return self._root

    @contextlib.contextmanager
    def folder(self, name: str) -> Iterator[Path]:
        """A fresh, empty folder for one piece of work, removed afterwards whatever happens. A
        full disk inside it is the host's state (transient `storage_failed`), not the job's."""
        with full_disk_is_transient("The scratch folder"):
            path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        try:
            with full_disk_is_transient(f"The scratch folder {self.root}"):
                yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def remove(self) -> None:
        """Remove this process's scratch folder (at exit)."""
        if self._root is not None and self._pid == os.getpid():
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


class KeptSource:
    """The source of the last part this process ran, kept in its scratch: the parts of one job
    that land on one process download the source once. A key names one attempt's output,
    which never changes, so a kept copy is never stale; only one is kept, to bound the disk."""

    def __init__(self, scratch: Scratch) -> None:
        self.scratch = scratch
        self.key: str | None = None
        self.path: Path | None = None
        self._pid = 0

    def get(self, workspace: Workspace, key: str, *, should_stop: StopCheck = never) -> Path:
        if self._pid == os.getpid() and self.key == key and self.path is not None and self.path.is_file():
            return self.path
        self.drop()
        with full_disk_is_transient("The scratch folder"):
            folder = Path(tempfile.mkdtemp(prefix="kept-source-", dir=self.scratch.root))
        try:
            # Downloaded under another name: a stopped download is never taken for the source.
            downloaded = workspace.get_file(key, folder / "download", should_stop=should_stop)
            path = downloaded.rename(folder / "source")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.key, self.path, self._pid = key, path, os.getpid()
        return path

    def drop(self) -> None:
        """Remove the kept copy (never one another process kept before a fork)."""
        if self.path is not None and self._pid == os.getpid():
            shutil.rmtree(self.path.parent, ignore_errors=True)
        self.key = self.path = None
