"""Reachability checks for readiness: each returns ok, latency in ms, and the error if any."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from botocore.exceptions import ClientError
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.storage import make_s3_client
from services.workspace import open_workspace

CHECK_TIMEOUT_SECONDS = 2.0


def _timed(check: Callable[[], object]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:
        return {
            "ok": False,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "error": str(exc)[:300],
        }
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def check_database(sessions: sessionmaker[Session]) -> dict[str, Any]:
    def ping() -> None:
        with sessions() as session:
            session.execute(text("SELECT 1"))

    return _timed(ping)


def check_redis(url: str) -> dict[str, Any]:
    def ping() -> None:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=CHECK_TIMEOUT_SECONDS, socket_timeout=CHECK_TIMEOUT_SECONDS
        )
        try:
            client.ping()
        finally:
            client.close()

    return _timed(ping)


def check_s3(settings: Settings) -> dict[str, Any]:
    client = make_s3_client(settings, timeout=CHECK_TIMEOUT_SECONDS, attempts=1)

    def head() -> None:
        try:
            client.head_bucket(Bucket=settings.s3_bucket)
        except ClientError as exc:
            # A missing bucket is created by the first upload; the server itself answered.
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise

    return _timed(head)


def check_workspace(settings: Settings) -> dict[str, Any]:
    """Can the workspace be written: its bucket exists and answers (or its folder is there)."""
    return _timed(open_workspace(settings, timeout=CHECK_TIMEOUT_SECONDS, attempts=1).check)
