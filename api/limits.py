"""Rate limits per API key on submissions, counted in Redis so every API process shares them."""

from __future__ import annotations

from flask import Flask, current_app, g, request
from flask_limiter import Limiter

from services.apikeys import hash_key
from services.config import Settings


def _caller_key() -> str:
    """The authenticated key's id (limits run in the view, after authenticate); the bearer
    token's digest otherwise, so an unauthenticated request never shares a bucket by address."""
    caller = g.get("caller")
    if caller is not None:
        return f"key:{caller.id}"
    return "token:" + hash_key(request.headers.get("Authorization", ""))[:32]


def _submit_limit() -> str:
    settings: Settings = current_app.extensions["conveyor.settings"]
    return settings.submit_rate_limit


limiter = Limiter(
    key_func=_caller_key,
    strategy="fixed-window",
    headers_enabled=True,
    # Redis down must not stop submissions: the API still answers 202 (the sweeper dispatches
    # later), so a limit that cannot be counted is skipped rather than failing the request.
    swallow_errors=True,
    key_prefix="conveyor-limits",
)
# One budget for both ways to submit (POST /jobs and POST /uploads).
submit_limit = limiter.shared_limit(_submit_limit, scope="submit")


def init_limits(app: Flask, settings: Settings) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}
    app.config["RATELIMIT_HEADER_RETRY_AFTER_VALUE"] = "delta-seconds"
    limiter.init_app(app)
