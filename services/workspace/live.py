"""Uploading a transcode's outputs while ffmpeg still writes them, so an object-store
workspace costs little wall time: by the time ffmpeg exits, all but the last segment of each
rendition are already in the workspace.

A segment (``seg_00003.ts``) is complete once the next one of its folder exists: ffmpeg's HLS
muxer opens segment n + 1 only after closing n. Everything else (the last segments, the
playlists, init sections, the poster and the storyboard) is written or rewritten up to the
end, so it goes up in `finish`, once ffmpeg has exited.
"""

from __future__ import annotations

import concurrent.futures
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from services.errors import Canceled
from services.workspace.base import StopCheck, Workspace
from services.workspace.streams import STOP_POLL_SECONDS

SEGMENT = re.compile(r"^seg_(\d+)\.(ts|m4s)$")
SCAN_SECONDS = 0.2
# Segments are small: an upload is mostly waiting on a round trip, so many go side by side.
UPLOAD_CONCURRENCY = 8


def complete_segments(folder: Path) -> list[Path]:
    """The segments of `folder` that ffmpeg has closed: all but the highest-numbered of each kind."""
    by_kind: dict[str, list[tuple[int, Path]]] = {}
    for path in folder.iterdir():
        match = SEGMENT.match(path.name)
        if match:
            by_kind.setdefault(match[2], []).append((int(match[1]), path))
    complete = []
    for numbered in by_kind.values():
        complete += [path for _, path in sorted(numbered)[:-1]]
    return complete


class FolderUploader:
    """Mirrors `folder` (a scratch folder ffmpeg writes) to `prefix` in the workspace."""

    def __init__(self, folder: Path, workspace: Workspace, prefix: str, *, should_stop: StopCheck) -> None:
        self.folder, self.workspace, self.prefix = folder, workspace, prefix
        self.should_stop = should_stop
        self._sent: dict[Path, Future[None]] = {}
        self._pool = ThreadPoolExecutor(UPLOAD_CONCURRENCY, thread_name_prefix="live-upload")
        self._stop = threading.Event()
        self._scanner = threading.Thread(target=self._scan, name="live-upload-scan", daemon=True)
        self.error: BaseException | None = None

    @property
    def failed(self) -> bool:
        """An upload failed: the transcode should stop now rather than finish for nothing."""
        return self.error is not None

    def __enter__(self) -> FolderUploader:
        self._scanner.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop_scanning()
        # After `finish` nothing is left; after a failure or a stop, nothing must hold it up.
        self._pool.shutdown(wait=error is None, cancel_futures=True)

    def finish(self) -> list[str]:
        """Upload what is left once ffmpeg has exited and wait for every upload; the keys."""
        self._stop_scanning()
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            self._send(path)
        pending = set(self._sent.values())
        while pending:
            if self.should_stop():
                raise Canceled("The transcode's upload was stopped.")
            done, pending = concurrent.futures.wait(
                pending, timeout=STOP_POLL_SECONDS, return_when="FIRST_COMPLETED"
            )
            for future in done:
                future.result()
        return sorted(self._key(path) for path in self._sent)

    # -- internals -----------------------------------------------------------------------------

    def _key(self, path: Path) -> str:
        return self.prefix + path.relative_to(self.folder).as_posix()

    def _send(self, path: Path) -> None:
        if path not in self._sent:
            future = self._pool.submit(
                self.workspace.put_file, path, self._key(path), should_stop=self.should_stop
            )
            future.add_done_callback(self._note_failure)
            self._sent[path] = future

    def _note_failure(self, future: Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None and self.error is None:
            self.error = future.exception()

    def _stop_scanning(self) -> None:
        self._stop.set()
        if self._scanner.is_alive():
            self._scanner.join()

    def _scan(self) -> None:
        while not self._stop.wait(SCAN_SECONDS) and not self.should_stop() and self.error is None:
            if self.folder.is_dir():
                for rendition in [p for p in self.folder.iterdir() if p.is_dir()]:
                    for segment in complete_segments(rendition):
                        self._send(segment)
