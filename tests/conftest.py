"""Shared fixtures. Integration fixtures start real servers: an embedded S3 (SeaweedFS), Celery
workers as separate processes, and the Flask API on a real socket, against the machine's
PostgreSQL and Redis. The environment is set here, before any of our modules read settings.

The workspace is the object store (a bucket of its own on the same S3 server), as in a
deployment whose hosts share nothing; tests/integration/test_workspaces.py runs the pipeline
on a file:// workspace too."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import redis

from scripts.s3server import free_s3_port

TEST_ROOT = Path(tempfile.mkdtemp(prefix="conveyor-tests-"))
S3_PORT = free_s3_port()
# Per-session database and Redis database, so two test runs on one machine never collide.
TEST_DB = f"conveyor_test_{os.getpid()}"
REDIS_OWNER_KEY = "conveyor:test-session-pid"
WORKSPACE_BUCKET = "conveyor-test-work"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_redis_db() -> int:
    """A Redis database (1-15) no live test session holds: each records its pid in the one it
    takes, and a database whose recorded pid is dead is free again."""
    for db in range(1, 16):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=5)
        if client.set(REDIS_OWNER_KEY, os.getpid(), nx=True):
            return db
        owner = client.get(REDIS_OWNER_KEY)
        if owner is None or not _pid_alive(int(owner)):
            client.set(REDIS_OWNER_KEY, os.getpid())
            return db
    raise RuntimeError("every Redis database 1-15 is held by a live test session")


REDIS_DB = claim_redis_db()
# The suite's API listens here, so playback links (API_PUBLIC_URL) reach it.
API_PORT = free_port()
os.environ.update(
    {
        "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{TEST_DB}",
        "REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "WORKSPACE_URL": f"s3://{WORKSPACE_BUCKET}/work",
        "WORKSPACE_CLEAN_INTERVAL_SECONDS": "2",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
        "S3_BUCKET": "conveyor-test",
        "S3_PREFIX": "hls",
        "AWS_ACCESS_KEY_ID": "conveyor-test",
        "AWS_SECRET_ACCESS_KEY": "conveyor-test-secret",
        "CONVEYOR_SECRET_KEY": "conveyor-test-secret-key-of-forty-characters",
        "API_PUBLIC_URL": f"http://127.0.0.1:{API_PORT}",
        "SSRF_ALLOW_CIDRS": json.dumps(["127.0.0.0/8"]),
        "HEARTBEAT_SECONDS": "1",
        "STAGE_LEASE_SECONDS": "10",
        "BROKER_VISIBILITY_TIMEOUT_SECONDS": "15",
        "RETRY_BACKOFF_SECONDS": "0.2",
        "WEBHOOK_RETRY_SCHEDULE": json.dumps([0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]),
        "WEBHOOK_DISPATCH_SECONDS": "0.5",
        "SWEEP_INTERVAL_SECONDS": "2",
        "SWEEP_GRACE_SECONDS": "5",
        "SEGMENT_SECONDS": "2",
        "X264_PRESET": "ultrafast",
        "LOG_LEVEL": "INFO",
    }
)
os.environ.pop("GOOGLE_API_KEY", None)

pytest_plugins = ["tests.fixtures", "tests.ops_fixtures"]
