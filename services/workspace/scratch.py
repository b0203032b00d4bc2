"""Scratch: a process's private folder for the files ffmpeg reads and writes.

Each process makes its own, a fresh folder under SCRATCH_DIR (default: the system's temporary
folder), on first use and again after a fork, so no two processes (a worker's prefork
children included) ever share one, and nothing another process writes is ever read from it.
Each stage attempt works in a folder of its own inside it, removed when the attempt ends.

A process killed outright (SIGKILL at a hard time limit, the OOM killer) cannot remove its
folder, and it may hold gigabytes (a kept source). So each folder carries a lock its process
holds for as long as it lives (flock: the kernel drops it when the process dies, whatever
kills it), and a process making its folder removes every sibling whose lock it can take.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from services.workspace.base import StopCheck, Workspace, never
from services.workspace.streams import full_disk_is_transient

ROOT_PREFIX = "conveyor-"
LOCK_NAME = ".alive"


def _take_lock(path: Path) -> int | None:
    """An open descriptor holding `path`'s exclusive lock, or None if a live process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_abandoned(parent: Path) -> None:
    """Remove the scratch folders under `parent` whose process is gone."""
    for lock in parent.glob(f"{ROOT_PREFIX}*/{LOCK_NAME}"):
        fd = _take_lock(lock)
        if fd is not None:
            try:
                shutil.rmtree(lock.parent, ignore_errors=True)
            finally:
                os.close(fd)


class Scratch:
    def __init__(self, parent: Path | None = None) -> None:
        self.parent = parent
        self._root: Path | None = None
        self._pid = 0
        self._lock: int | None = None

    @property
    def root(self) -> Path:
        if self._root is None or self._pid != os.getpid():
            with full_disk_is_transient("The scratch folder"):
                parent = self.parent or Path(tempfile.gettempdir())
                parent.mkdir(parents=True, exist_ok=True)
                self._root = self._make_root(parent)
            self._pid = os.getpid()
            remove_abandoned(parent)
        return self._root

    def _make_root(self, parent: Path) -> Path:
        # A lock descriptor inherited through a fork is left as it is (the pool may have closed
        # it, and its number may name another file by now): the parent's folder then stays
        # until its children are gone too, which errs on the side of keeping it.
        root = Path(tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-", dir=parent))
        # Locked under another name first: a sweeper only ever sees a lock already held.
        pending = root / f"{LOCK_NAME}.new"
        self._lock = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        pending.rename(root / LOCK_NAME)
        return root

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
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None


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
