"""Writing one S3 object from a stream of unknown length, in constant memory.

Bytes gather into a part, spooled to a file in the writer's scratch folder (not memory: a
process holds a few parts at once, and a gunicorn worker has no room for them); a full part
is sent by a background thread, straight from its file, while the next one fills, so reading
(an HTTP body, a download) and sending overlap. At most IN_FLIGHT parts are on their way:
a writer that outruns the store waits for it, and looks at its stop flag while it waits. A
part's file goes once the part is sent. A stream that ends within one part is sent as a
plain PUT at commit. Until the commit nothing is visible under the key: an incomplete
multipart upload is invisible to readers and listings, and the retention task aborts it if
its writer was killed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from services.errors import Canceled, StorageFailed
from services.storage import MISSING_BUCKET_CODES, STORAGE_ERRORS
from services.workspace.base import CommitOnExit, StopCheck, never
from services.workspace.streams import STOP_POLL_SECONDS, full_disk_is_transient

PART_BYTES = 8 * 1024 * 1024
# Parts sent side by side, beside the one filling: the store hashes each part several times
# over (SeaweedFS: MD5 for the ETag, the chunk and the volume), so it keeps up only with parts
# in parallel (2 GB upload here: 123 MB/s with 4, 114 with 2). Each sending thread keeps
# buffers (and a malloc arena) of its own: 4 still leave the API's peak RSS at 139 MB.
IN_FLIGHT = 4
# S3 allows 10,000 parts. Parts grow every 1,000 (8 MiB, then 16, 32, …), so an object of
# any size our limits allow fits, and small ones keep small parts.
PARTS_PER_SIZE = 1000
MISSING_KEY_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def storage_failed(
    exc: BaseException, doing: str, bucket: str, missing: str = "the workspace holds no such object"
) -> StorageFailed:
    """The stage error for a failure of the workspace's store: always transient, never a
    misleading code (a missing bucket or an unreachable server is the operator's to fix, and
    the job waits). `missing` says what a bare 404 (a HEAD has no error body) means."""
    error = getattr(exc, "response", {}).get("Error", {})
    code = str(error.get("Code") or type(exc).__name__)
    if code in MISSING_BUCKET_CODES:
        return StorageFailed(f"{doing} failed: the workspace bucket {bucket!r} does not exist.")
    if code in MISSING_KEY_CODES:
        return StorageFailed(f"{doing} failed: {missing}.")
    return StorageFailed(f"{doing} failed ({code}): {exc}")


class PartBody:
    """A part's file as an upload body, read a mebibyte at a time whatever size is asked: the
    HTTP client asks for 16 kB per read, and 64 times fewer reads are CPU the API keeps."""

    READ_BYTES = 1024 * 1024

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size if size is None or size < 0 else max(size, self.READ_BYTES))

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()


def part_size(number: int) -> int:
    """The size part `number` (from 1) is sent at, once that many bytes have gathered."""
    return int(PART_BYTES * 2 ** ((number - 1) // PARTS_PER_SIZE))


class MultipartWriter(CommitOnExit):
    def __init__(
        self,
        client: Any,
        bucket: str,
        name: str,
        key: str,
        *,
        spool_in: Path,
        should_stop: StopCheck = never,
        describe: str = "the workspace",
    ) -> None:
        self.client, self.bucket, self.name, self.key = client, bucket, name, key
        self.should_stop = should_stop
        self.describe = describe
        self.size = 0
        with full_disk_is_transient("The scratch folder"):
            spool_in.mkdir(parents=True, exist_ok=True)
            self._spool = Path(tempfile.mkdtemp(prefix="upload-", dir=spool_in))
        self._part: IO[bytes] | None = None
        self._gathered = 0
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._done = False

    def write(self, data: bytes) -> None:
        if self._done:
            raise ValueError("write after commit or abort")
        if not data:
            return
        with full_disk_is_transient("The scratch folder"):
            if self._part is None:
                self._part = (self._spool / f"part-{len(self._parts) + 1}").open("wb")
            self._part.write(data)
        self._gathered += len(data)
        self.size += len(data)
        if self._gathered >= part_size(len(self._parts) + 1):
            self._send_part()

    def commit(self) -> int:
        if self._done:
            raise ValueError("commit after commit or abort")
        try:
            if self._upload_id is None:
                with self._last_part() as body:
                    self._call("put_object", Bucket=self.bucket, Key=self.name, Body=body)
            else:
                if self._gathered:
                    self._send_part()
                parts = [self._wait(future) for future in self._parts]
                self._call(
                    "complete_multipart_upload",
                    Bucket=self.bucket,
                    Key=self.name,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            self.abort()
            raise
        self._finish()
        return self.size

    def abort(self) -> None:
        if self._done:
            return
        self._finish()
        if self._upload_id is not None:
            # Invisible anyway; should this fail, the retention task aborts what is left over.
            with contextlib.suppress(*STORAGE_ERRORS):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.name, UploadId=self._upload_id
                )

    # -- internals -----------------------------------------------------------------------------

    def _finish(self) -> None:
        self._done = True
        if self._part is not None:
            self._part.close()
            self._part = None
        if self._pool is not None:
            # A part still on its way (a slow link) must not hold up a stop: it fails or lands
            # in an upload that is aborted, invisible either way.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        # A part still being read keeps its file open: unlinked, it goes when it is closed.
        shutil.rmtree(self._spool, ignore_errors=True)

    @contextlib.contextmanager
    def _last_part(self) -> Any:
        """The bytes gathered so far as a readable body (empty when nothing was written)."""
        if self._part is None:
            yield b""
            return
        self._part.close()
        path, self._part, self._gathered = Path(self._part.name), None, 0
        with path.open("rb") as body:
            yield body

    def _call(self, operation: str, **params: Any) -> Any:
        try:
            return getattr(self.client, operation)(**params)
        except STORAGE_ERRORS as exc:
            raise storage_failed(exc, f"Writing {self.key} to {self.describe}", self.bucket) from exc

    def _send_part(self) -> None:
        assert self._part is not None
        self._part.close()
        path, self._part, self._gathered = Path(self._part.name), None, 0
        if self._upload_id is None:
            started = self._call("create_multipart_upload", Bucket=self.bucket, Key=self.name)
            self._upload_id = str(started["UploadId"])
            self._pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="multipart")
        assert self._pool is not None
        self._wait_for_room()
        number = len(self._parts) + 1
        self._parts.append(self._pool.submit(self._upload_part, number, path))

    def _upload_part(self, number: int, path: Path) -> dict[str, Any]:
        with path.open("rb") as body:
            answer = self._call(
                "upload_part",
                Bucket=self.bucket,
                Key=self.name,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=PartBody(body),
            )
        path.unlink(missing_ok=True)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _wait_for_room(self) -> None:
        while True:
            pending = [future for future in self._parts if not future.done()]
            for future in self._parts:
                if future.done() and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            if len(pending) < IN_FLIGHT:
                return
            self._check_stop()
            concurrent.futures.wait(pending, timeout=STOP_POLL_SECONDS, return_when="FIRST_COMPLETED")

    def _wait(self, future: Future[dict[str, Any]]) -> dict[str, Any]:
        while True:
            self._check_stop()
            try:
                return future.result(timeout=STOP_POLL_SECONDS)
            except concurrent.futures.TimeoutError:
                continue

    def _check_stop(self) -> None:
        if self.should_stop():
            raise Canceled(f"Writing {self.key} was stopped.")
