"""Errors are values with a stable code; the API and the stage runner map them in one place each."""

from __future__ import annotations


class ConveyorError(Exception):
    """A failure with a stable machine code and a message for people.

    ``transient`` errors (network, 5xx, broker) are retried with backoff; permanent ones
    fail the job at once.
    """

    code = "internal_error"
    transient = False

    def __init__(self, message: str, *, code: str | None = None, transient: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if transient is not None:
            self.transient = transient


class InvalidMedia(ConveyorError):
    code = "invalid_media"


class TooLarge(ConveyorError):
    code = "too_large"


class BlockedUrl(ConveyorError):
    code = "blocked_url"


class FetchFailed(ConveyorError):
    code = "fetch_failed"
    transient = True


class TranscodeFailed(ConveyorError):
    code = "transcode_failed"


class StageTimeout(ConveyorError):
    code = "timeout"


class Canceled(ConveyorError):
    code = "canceled"


class StorageFailed(ConveyorError):
    code = "storage_failed"
    transient = True


class DiskFull(ConveyorError):
    """The worker's disk filled up: another attempt (another host, or after cleanup) may fit."""

    code = "disk_full"
    transient = True


class AnalysisFailed(ConveyorError):
    code = "analysis_failed"


class WebhookFailed(ConveyorError):
    code = "webhook_failed"
    transient = True
