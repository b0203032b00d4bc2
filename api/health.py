"""Liveness and readiness: is the process up; can it reach PostgreSQL, Redis, S3 and the workspace."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.db import sessions
from api.openapi import operation
from api.responses import Readiness, Status
from services.config import Settings
from services.health import check_database, check_redis, check_s3, check_workspace

bp = Blueprint("health", __name__)


@bp.get("/livez")
@operation("The process is up.", access="public", tag="health", responses={200: Status})
def livez() -> ResponseReturnValue:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@operation(
    "PostgreSQL, Redis, S3 and the workspace each checked, with latency.",
    access="public",
    tag="health",
    responses={200: Readiness, 503: Readiness},
)
def readyz() -> ResponseReturnValue:
    settings: Settings = current_app.extensions["conveyor.settings"]
    checks = {
        "postgres": check_database(sessions()),
        "redis": check_redis(settings.redis_url),
        "s3": check_s3(settings),
        "workspace": check_workspace(settings),
    }
    ready = all(check["ok"] for check in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), 200 if ready else 503
