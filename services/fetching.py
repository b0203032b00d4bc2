"""Stream a source video from a URL into a sink (the workspace and scratch), through the SSRF
guard and a size cap."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Sequence
from typing import Protocol

import urllib3
from urllib3.exceptions import HTTPError

from services.errors import FetchFailed, TooLarge
from services.netguard import open_guarded, redact_url
from services.workspace.base import never
from services.workspace.streams import stoppable

CHUNK_BYTES = 1024 * 1024
USER_AGENT = "Conveyor-Fetch/1"
# Rate limits and request timeouts are the server asking us to come back later.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})


class Sink(Protocol):
    """Where fetched bytes go, chunk by chunk; the caller completes or discards it."""

    def write(self, data: bytes) -> object: ...


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


def _stream_to(
    response: urllib3.BaseHTTPResponse,
    sink: Sink,
    *,
    max_bytes: int,
    url: str,
    should_stop: Callable[[], bool],
) -> int:
    written = 0
    # Counting what is written (decoded) also caps a compressed body that expands.
    chunks = response.stream(CHUNK_BYTES, decode_content=True)
    for chunk in stoppable(chunks, should_stop, what=f"Fetching {redact_url(url)}"):
        written += len(chunk)
        if written > max_bytes:
            raise TooLarge(f"{redact_url(url)} sent more than {max_bytes} bytes.")
        sink.write(chunk)
    return written


def fetch_url(
    url: str,
    sink: Sink,
    *,
    max_bytes: int,
    connect_timeout: float,
    read_timeout: float,
    allow_cidrs: Sequence[str] = (),
    should_stop: Callable[[], bool] = never,
) -> int:
    """Stream ``url`` into ``sink`` and return the number of bytes written.

    The sink is the caller's to complete or discard: a workspace writer makes nothing visible
    until it is committed, so a worker killed mid-download never leaves a source that looks
    finished to a later stage.
    """
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
            return _stream_to(response, sink, max_bytes=max_bytes, url=url, should_stop=should_stop)
        except HTTPError as exc:
            raise FetchFailed(f"Reading {redact_url(url)} failed ({type(exc).__name__}).") from exc
    except BaseException:
        _hang_up(response)
        raise
    finally:
        with contextlib.suppress(HTTPError, OSError):
            response.close()


def _hang_up(response: urllib3.BaseHTTPResponse) -> None:
    """End the connection under a read that may still be blocked in the reader thread (a
    stopped fetch of a slow server): closing the response alone would wait for that read. A
    shutdown of the socket (through a duplicate of its descriptor) wakes the read at once. A
    body read to its end has no socket left (http.client drops it: AttributeError)."""
    with (
        contextlib.suppress(OSError, ValueError, AttributeError),
        socket.fromfd(response.fileno(), socket.AF_INET, socket.SOCK_STREAM) as duplicate,
    ):
        duplicate.shutdown(socket.SHUT_RDWR)
