"""Every error leaves the API as JSON {"error": {"code", "message"}} with a fitting status."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from services.errors import ConveyorError

log = logging.getLogger("conveyor.api")

# One place maps stable codes to HTTP statuses.
STATUS_BY_CODE = {
    "invalid_request": 400,
    "invalid_options": 400,
    "invalid_source": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "priority_not_allowed": 403,
    "bucket_not_allowed": 403,
    "backend_not_allowed": 403,
    "not_found": 404,
    "conflict": 409,
    "idempotency_mismatch": 409,
    "too_large": 413,
    "unsupported_media_type": 415,
    "invalid_media": 422,
    "blocked_url": 422,
    "rate_limited": 429,
    "active_jobs_quota_exceeded": 429,
    "daily_bytes_quota_exceeded": 429,
    "unavailable": 503,
    "not_configured": 503,
    # The workspace cannot take the upload now (bucket missing, store unreachable, disk full).
    "storage_failed": 503,
}
CODE_BY_HTTP_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


class ApiError(ConveyorError):
    def __init__(
        self, code: str, message: str, *, status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.status = status or STATUS_BY_CODE.get(code, 400)
        self.headers = headers or {}


def error_body(
    code: str, message: str, status: int, headers: dict[str, str] | None = None
) -> ResponseReturnValue:
    return jsonify({"error": {"code": code, "message": message}}), status, headers or {}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> ResponseReturnValue:
        return error_body(error.code, error.message, error.status, error.headers)

    @app.errorhandler(ConveyorError)
    def _domain_error(error: ConveyorError) -> ResponseReturnValue:
        return error_body(error.code, error.message, STATUS_BY_CODE.get(error.code, 400))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> ResponseReturnValue:
        status = error.code or 500
        if status == 413:
            message = "The upload is larger than this server accepts."
        else:
            message = error.description or error.name
        return error_body(
            CODE_BY_HTTP_STATUS.get(status, error.name.lower().replace(" ", "_")), message, status
        )

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return error_body("internal_error", "Something went wrong on our side; it has been logged.", 500)
