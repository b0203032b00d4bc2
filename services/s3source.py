"""An S3 object as a job's source, streamed into a sink with ranged GETs in constant memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.errors import ConveyorError, FetchFailed, TooLarge
from services.fetching import Sink
from services.workspace.base import never
from services.workspace.streams import stoppable

# One GET per range: a failure costs at most this much again, and each body is streamed in
# READ_BYTES pieces, so memory stays flat however large the object.
RANGE_BYTES = 16 * 1024 * 1024
# Small enough that a stop is seen within a fraction of a second even on a slow link.
READ_BYTES = 256 * 1024
MISSING_CODES = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})
DENIED_CODES = frozenset({"403", "AccessDenied", "Forbidden"})
# The object changed between two ranges (its ETag no longer matches): start over.
CHANGED_CODES = frozenset({"412", "PreconditionFailed"})


def _s3_error(exc: ClientError | BotoCoreError, where: str) -> ConveyorError:
    if isinstance(exc, BotoCoreError):
        return FetchFailed(f"{where} could not be read ({type(exc).__name__}).")
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in MISSING_CODES:
        return FetchFailed(f"{where} does not exist.", transient=False)
    if code in DENIED_CODES:
        return FetchFailed(f"{where} may not be read with our credentials.", transient=False)
    if code in CHANGED_CODES:
        return FetchFailed(f"{where} changed while it was being copied.")
    return FetchFailed(
        f"{where} could not be read ({code or status}).", transient=status >= 500 or not status
    )


def _ranges(
    client: Any, bucket: str, key: str, size: int, etag: str, range_bytes: int
) -> Iterator[tuple[int, bytes]]:
    """(end of range, chunk) for every chunk of every range; IfMatch stops at a changed object."""
    for start in range(0, size, range_bytes):
        end = min(start + range_bytes, size) - 1
        response = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}", IfMatch=etag)
        for chunk in response["Body"].iter_chunks(READ_BYTES):
            yield end, chunk


def fetch_s3_object(
    client: Any,
    bucket: str,
    key: str,
    sink: Sink,
    *,
    allowed_buckets: Sequence[str],
    max_bytes: int,
    range_bytes: int = RANGE_BYTES,
    on_progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] = never,
) -> int:
    """Stream s3://bucket/key into sink (the caller completes or discards it); its size."""
    where = f"s3://{bucket}/{key}"
    if bucket not in allowed_buckets:
        # Our credentials may reach buckets a job's owner must not read (other tenants' output).
        raise ConveyorError(
            f"Bucket {bucket!r} is not open to sources (S3_SOURCE_BUCKETS).", code="blocked_source"
        )
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        size, etag = int(head["ContentLength"]), head["ETag"]
        if size > max_bytes:
            raise TooLarge(f"{where} is {size} bytes; the limit is {max_bytes}.")
        written = 0
        chunks = stoppable(
            _ranges(client, bucket, key, size, etag, range_bytes), should_stop, what=f"Reading {where}"
        )
        for end, chunk in chunks:
            sink.write(chunk)
            written += len(chunk)
            if written == end + 1 and on_progress is not None:
                on_progress(100.0 * written / size)
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(exc, where) from exc
    if written != size:
        raise FetchFailed(f"{where} ended early at byte {written} of {size}.")
    return size
