"""Reachability checks for readiness (each returns ok, latency in ms, and the error if any),
and a value kept fresh by a background thread, for health answers that must not wait."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis
from botocore.exceptions import ClientError
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.workspace import Workspace

CHECK_TIMEOUT_SECONDS = 2.0
T = TypeVar("T")
log = logging.getLogger("conveyor.health")


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


def health_redis_client(url: str) -> redis.Redis:
    """A client for the checks, kept by its caller: its pool reconnects after a Redis restart."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=CHECK_TIMEOUT_SECONDS, socket_timeout=CHECK_TIMEOUT_SECONDS
    )


def check_redis(client: redis.Redis) -> dict[str, Any]:
    return _timed(client.ping)


def check_s3(client: Any, bucket: str) -> dict[str, Any]:
    def head() -> None:
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            # A missing bucket is created at set-up; the server itself answered.
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise

    return _timed(head)


def check_workspace(workspace: Workspace) -> dict[str, Any]:
    """Can the workspace be written: its bucket exists and answers (or its folder is there)."""
    return _timed(workspace.check)


class Refreshed(Generic[T]):
    """The latest result of `compute`, recomputed every `interval_seconds` by a daemon thread
    started at the first read. A read never computes: it waits (at most `first_wait_seconds`)
    only for the very first result. `age` tells how old a result is, so a stalled refresher
    shows as stale rather than as a frozen healthy answer."""

    def __init__(
        self, compute: Callable[[], T], *, interval_seconds: float, first_wait_seconds: float
    ) -> None:
        self.compute = compute
        self.interval_seconds = interval_seconds
        self.first_wait_seconds = first_wait_seconds
        self._value: T | None = None
        self._at = 0.0
        self._ready = threading.Event()
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None

    def get(self) -> tuple[T | None, float]:
        """(the latest result or None if none yet, its age in seconds)."""
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="health-refresh", daemon=True)
                self._thread.start()
        self._ready.wait(self.first_wait_seconds)
        return self._value, time.monotonic() - self._at

    def _run(self) -> None:
        while True:
            try:
                self._value, self._at = self.compute(), time.monotonic()
                self._ready.set()
            except Exception:
                log.warning("health refresh failed", exc_info=True)
            time.sleep(self.interval_seconds)
