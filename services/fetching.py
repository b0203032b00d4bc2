"""Stream a source video from a URL into a sink (the workspace and scratch), through the SSRF
guard and a size cap."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from typing import Protocol

import urllib3
from urllib3.exceptions import HTTPError

from services.errors import Canceled, FetchFailed, TooLarge
from services.netguard import open_guarded, redact_url
from services.stopping import StopSignal

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


def _cut(response: urllib3.BaseHTTPResponse) -> None:
    """Shut the response's socket down from another thread: a read blocked on a slow server
    returns at once (closing a file descriptor would not wake it). The socket is reached
    through a duplicate of its descriptor, which shutdown(2) acts on all the same. A body read
    to its end has no socket left (http.client drops it: AttributeError)."""
    with (
        contextlib.suppress(OSError, ValueError, AttributeError),
        socket.fromfd(response.fileno(), socket.AF_INET, socket.SOCK_STREAM) as duplicate,
    ):
        duplicate.shutdown(socket.SHUT_RDWR)


def _stream_to(
    response: urllib3.BaseHTTPResponse, sink: Sink, *, max_bytes: int, url: str, stop: StopSignal | None
) -> int:
    written = 0
    # Counting what is written (decoded) also caps a compressed body that expands.
    for chunk in response.stream(CHUNK_BYTES, decode_content=True):
        if stop is not None and stop():
            break
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
    stop: StopSignal | None = None,
) -> int:
    """Stream ``url`` into ``sink`` and return the number of bytes written.

    The sink is the caller's to complete or discard: a workspace writer makes nothing visible
    until it is committed, so a worker killed mid-download never leaves a source that looks
    finished to a later stage. When ``stop`` is set the download ends at once, even inside a
    read a slow server holds open.
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
            with stop.aborting(lambda: _cut(response)) if stop else contextlib.nullcontext():
                written = _stream_to(response, sink, max_bytes=max_bytes, url=url, stop=stop)
        except HTTPError as exc:
            if stop is not None and stop():
                raise Canceled(f"The download of {redact_url(url)} was stopped.") from exc
            raise FetchFailed(f"Reading {redact_url(url)} failed ({type(exc).__name__}).") from exc
        if stop is not None and stop():
            raise Canceled(f"The download of {redact_url(url)} was stopped.")
        return written
    finally:
        with contextlib.suppress(HTTPError, OSError):
            response.close()
