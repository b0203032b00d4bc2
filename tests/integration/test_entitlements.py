"""Entitlements per API key, set with the key CLI: priorities (a plain key: normal and low),
S3 source buckets, analysis backends (Gemini only when granted, whatever GOOGLE_API_KEY
says), quotas on jobs queued or running and on source bytes per day; each refusal is a
403 or 429 with its own code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import ApiKey
from services.apikeys import set_entitlements
from tests.fixtures import REPO, ApiClient, make_key

pytestmark = pytest.mark.integration


def flask_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "api", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip


def refused(answer: Any, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code, answer.text


def job(source: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"source": source, "options": options}


URL = {"url": "http://127.0.0.1:9/clip.mp4"}


@pytest.fixture
def tenant(api_url: str, sessions: sessionmaker[Session]) -> tuple[ApiClient, str]:
    key = make_key(sessions, "entitled")
    return ApiClient(api_url, key), key[:12]


def grant(sessions: sessionmaker[Session], prefix: str, **change: Any) -> None:
    with sessions.begin() as session:
        assert set_entitlements(session, prefix, change)


def test_a_plain_key_gets_normal_and_low_local_analysis_and_no_bucket(tenant: tuple[ApiClient, str]) -> None:
    client, _ = tenant
    assert client.post("/api/v1/jobs", json=job(URL, priority="low")).status_code == 202
    refused(client.post("/api/v1/jobs", json=job(URL, priority="high")), 403, "priority_not_allowed")
    refused(
        client.post("/api/v1/jobs", json=job(URL, analysis={"backend": "gemini"})), 403, "backend_not_allowed"
    )
    s3 = {"s3": {"bucket": "ingest", "key": "a.mp4"}}
    refused(client.post("/api/v1/jobs", json=job(s3)), 403, "bucket_not_allowed")
    refused(client.upload(Path(__file__), {"analysis": {"backend": "gemini"}}), 403, "backend_not_allowed")


def test_granted_buckets_and_prefixes(tenant: tuple[ApiClient, str], sessions: sessionmaker[Session]) -> None:
    client, prefix = tenant
    grant(sessions, prefix, source_buckets=["ingest/tenant-a/", "whole"], priorities=["high", "normal"])
    ok = [{"bucket": "ingest", "key": "tenant-a/clip.mp4"}, {"bucket": "whole", "key": "any/thing.mp4"}]
    for s3 in ok:
        assert client.post("/api/v1/jobs", json=job({"s3": s3}, priority="high")).status_code == 202
    for s3 in ({"bucket": "ingest", "key": "tenant-b/clip.mp4"}, {"bucket": "other", "key": "x.mp4"}):
        refused(client.post("/api/v1/jobs", json=job({"s3": s3})), 403, "bucket_not_allowed")
    refused(client.post("/api/v1/jobs", json=job(URL, priority="low")), 403, "priority_not_allowed")


class SilentSource:
    """A URL whose server accepts and never answers: a job fetching it stays running until
    the server closes (then its fetch fails)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/slow.mp4"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.server.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent_source() -> Iterator[SilentSource]:
    source = SilentSource()
    yield source
    source.close()


def test_quota_on_jobs_queued_or_running(
    tenant: tuple[ApiClient, str], sessions: sessionmaker[Session], silent_source: SilentSource, workers: Any
) -> None:
    client, prefix = tenant
    grant(sessions, prefix, max_active_jobs=1)
    first = client.post("/api/v1/jobs", json=job({"url": silent_source.url}))
    assert first.status_code == 202
    refused(client.post("/api/v1/jobs", json=job(URL)), 429, "active_jobs_quota_exceeded")
    silent_source.close()
    assert client.wait_for_job(first.json()["id"])["status"] == "failed"
    assert client.post("/api/v1/jobs", json=job(URL)).status_code == 202


def test_quota_on_source_bytes_per_day(
    tenant: tuple[ApiClient, str], sessions: sessionmaker[Session], small_clip: Path
) -> None:
    client, prefix = tenant
    size = small_clip.stat().st_size
    grant(sessions, prefix, max_source_bytes_per_day=size + size // 2)
    assert client.upload(small_clip).status_code == 202
    refused(client.upload(small_clip), 429, "daily_bytes_quota_exceeded")


def test_the_key_cli_sets_and_changes_entitlements(sessions: sessionmaker[Session]) -> None:
    made = flask_cli(
        "create-key", "cli-tenant", "--priorities", "high,normal", "--analysis-backends", "local,gemini",
        "--max-active-jobs", "3", "--max-source-bytes-per-day", "2G",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1].split()[-1]
    assert key.startswith("cvk_")
    with sessions() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.prefix == key[:12])).one()
        assert (row.priorities, row.analysis_backends) == (["high", "normal"], ["local", "gemini"])
        assert (row.max_active_jobs, row.max_source_bytes_per_day) == (3, 2 * 1024**3)
    changed = flask_cli(
        "set-entitlements", key[:12], "--max-active-jobs", "unlimited", "--source-buckets", "ingest"
    )
    assert changed.returncode == 0, changed.stderr
    assert "max_active_jobs=unlimited" in changed.stdout and "source_buckets=ingest" in changed.stdout
    with sessions() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.prefix == key[:12])).one()
        assert (row.max_active_jobs, row.source_buckets, row.priorities) == (
            None,
            ["ingest"],
            ["high", "normal"],
        )
    bad = flask_cli("set-entitlements", key[:12], "--priorities", "urgent")
    assert bad.returncode != 0 and "unknown ['urgent']" in bad.stderr
    plain = flask_cli("create-key", "plain")
    assert "priorities=normal,low" in plain.stdout and "analysis_backends=local" in plain.stdout
