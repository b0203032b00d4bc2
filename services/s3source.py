"""An S3 object as a job's source, copied into the workspace with ranged GETs in constant memory."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.errors import Canceled, ConveyorError, FetchFailed, TooLarge

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


def fetch_s3_object(
    client: Any,
    bucket: str,
    key: str,
    dest: Path,
    *,
    allowed_buckets: Sequence[str],
    max_bytes: int,
    range_bytes: int = RANGE_BYTES,
    on_progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Copy s3://bucket/key into dest (through dest.part, renamed when complete); its size."""
    where = f"s3://{bucket}/{key}"
    if bucket not in allowed_buckets:
        # Our credentials may reach buckets a job's owner must not read (other tenants' output).
        raise ConveyorError(
            f"Bucket {bucket!r} is not open to sources (S3_SOURCE_BUCKETS).", code="blocked_source"
        )
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(exc, where) from exc
    size, etag = int(head["ContentLength"]), head["ETag"]
    if size > max_bytes:
        raise TooLarge(f"{where} is {size} bytes; the limit is {max_bytes}.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with part.open("wb") as out:
            for start in range(0, size, range_bytes):
                end = min(start + range_bytes, size) - 1
                response = client.get_object(
                    Bucket=bucket, Key=key, Range=f"bytes={start}-{end}", IfMatch=etag
                )
                for chunk in response["Body"].iter_chunks(READ_BYTES):
                    if should_stop():
                        response["Body"].close()
                        raise Canceled(f"The copy of {where} was stopped.")
                    out.write(chunk)
                if out.tell() != end + 1:
                    raise FetchFailed(f"{where} ended early at byte {out.tell()} of {size}.")
                if on_progress is not None:
                    on_progress(100.0 * (end + 1) / size)
        os.replace(part, dest)
    except (ClientError, BotoCoreError) as exc:
        part.unlink(missing_ok=True)
        raise _s3_error(exc, where) from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return size
