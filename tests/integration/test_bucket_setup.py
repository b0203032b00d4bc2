"""The delivery bucket's CORS is set once, at set-up (`flask --app api setup-bucket`, or the
embedded S3 server under `make run`), never by workers: a fresh worker that publishes a job
leaves what an operator set alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.config import get_settings
from services.storage import make_s3_client
from tests.fixtures import REPO, ApiClient, WorkerPool, start_worker, stop_worker

pytestmark = pytest.mark.integration

OPERATORS = {"AllowedOrigins": ["https://player.example"], "AllowedMethods": ["GET"], "AllowedHeaders": ["*"]}


def bucket_origins() -> list[str]:
    settings = get_settings()
    rules = make_s3_client(settings).get_bucket_cors(Bucket=settings.s3_bucket)["CORSRules"]
    origins: list[str] = rules[0]["AllowedOrigins"]
    return origins


def test_workers_leave_the_bucket_cors_alone_and_set_up_sets_it(
    client: ApiClient, small_clip: Path, worker_pool: WorkerPool
) -> None:
    settings = get_settings()
    make_s3_client(settings).put_bucket_cors(
        Bucket=settings.s3_bucket, CORSConfiguration={"CORSRules": [OPERATORS]}
    )
    # A worker process that has published nothing yet: its first upload sets up its S3 client.
    worker_pool.stop_default()
    worker = start_worker("cors")
    try:
        job = client.wait_for_job(client.upload(small_clip, {"renditions": ["240p"]}).json()["id"])
        assert job["status"] == "succeeded", job
    finally:
        stop_worker(worker)
    assert bucket_origins() == ["https://player.example"]

    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "api", "setup-bucket"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "CORS set" in done.stdout
    assert bucket_origins() == ["*"]
