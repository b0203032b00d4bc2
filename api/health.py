"""Liveness and readiness: is the process up; can it reach PostgreSQL, Redis, S3 and the workspace.

The clients are made once per app and reused: a readiness probe every few seconds must not
build a boto3 client (tens of milliseconds of CPU) or open a Redis connection each time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.db import sessions
from api.openapi import operation
from api.responses import Readiness, Status
from services.config import Settings
from services.health import (
    CHECK_TIMEOUT_SECONDS,
    check_database,
    check_redis,
    check_s3,
    check_workspace,
    health_redis_client,
)
from services.storage import make_s3_client
from services.workspace import Workspace, open_workspace

bp = Blueprint("health", __name__)


@dataclass(frozen=True)
class HealthClients:
    redis: redis.Redis
    s3: Any
    bucket: str
    workspace: Workspace


def init_health(app: Flask, settings: Settings) -> None:
    app.extensions["conveyor.health"] = HealthClients(
        redis=health_redis_client(settings.redis_url),
        s3=make_s3_client(settings, timeout=CHECK_TIMEOUT_SECONDS, attempts=1),
        bucket=settings.s3_bucket,
        workspace=open_workspace(settings, timeout=CHECK_TIMEOUT_SECONDS, attempts=1),
    )


def health_clients() -> HealthClients:
    clients: HealthClients = current_app.extensions["conveyor.health"]
    return clients


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
    clients = health_clients()
    checks = {
        "postgres": check_database(sessions()),
        "redis": check_redis(clients.redis),
        "s3": check_s3(clients.s3, clients.bucket),
        "workspace": check_workspace(clients.workspace),
    }
    ready = all(check["ok"] for check in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), 200 if ready else 503
