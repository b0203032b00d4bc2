"""Download a source video from a URL into the workspace, through the SSRF guard and a size cap."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError

from services.errors import FetchFailed, TooLarge
from services.netguard import open_guarded, redact_url

CHUNK_BYTES = 1024 * 1024
USER_AGENT = "Conveyor-Fetch/1"
# Rate limits and request timeouts are the server asking us to come back later.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})


def _check_status(response: urllib3.BaseHTTPResponse, url: str) -> None:
    status = response.status
    if 200 <= status < 300:
        return
    message = f"{redact_url(url)} answered HTTP {status}."
    if status >= 500 or status in RETRYABLE_CLIENT_STATUSES:
        raise FetchFailed(message)
    raise FetchFailed(message, transient=False)


def _declared_length(response: urllib3.BaseHTTPResponse) -> int | None:
    try:
        return int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None


def _stream_to(response: urllib3.BaseHTTPResponse, part: Path, *, max_bytes: int, url: str) -> int:
    written = 0
    with part.open("wb") as out:
        # Counting what is written (decoded) also caps a compressed body that expands.
        for chunk in response.stream(CHUNK_BYTES, decode_content=True):
            written += len(chunk)
            if written > max_bytes:
                raise TooLarge(f"{redact_url(url)} sent more than {max_bytes} bytes.")
            out.write(chunk)
    return written


def fetch_url(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    connect_timeout: float,
    read_timeout: float,
    allow_cidrs: Sequence[str] = (),
) -> int:
    """Stream ``url`` into ``dest`` and return the number of bytes written.

    The body lands in ``dest.part`` first and is renamed when complete, so a worker killed
    mid-download never leaves a ``dest`` that looks finished to a retried stage.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    response = open_guarded(
        "GET",
        url,
        allow_cidrs=allow_cidrs,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    try:
        _check_status(response, url)
        declared = _declared_length(response)
        if declared is not None and declared > max_bytes:
            raise TooLarge(f"{redact_url(url)} is {declared} bytes; the limit is {max_bytes}.")
        try:
            written = _stream_to(response, part, max_bytes=max_bytes, url=url)
        except HTTPError as exc:
            raise FetchFailed(f"Reading {redact_url(url)} failed ({type(exc).__name__}).") from exc
        os.replace(part, dest)
        return written
    except BaseException:
        # Whatever stopped the download (including a worker shutdown), no half file stays behind.
        part.unlink(missing_ok=True)
        raise
    finally:
        with contextlib.suppress(HTTPError, OSError):
            response.close()
