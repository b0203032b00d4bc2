"""Faults of the workspace get the right codes: a missing workspace bucket or an unreachable
store is transient `storage_failed`, a full scratch disk transient `disk_full` (retried, then
the job fails with that code and a message that says what is wrong), never a permanent
misleading one such as `invalid_media`, `transcode_failed` or `internal_error`."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from services.config import get_settings
from services.errors import DiskFull
from services.media.ffmpeg import run_ffmpeg
from services.workspace import open_workspace
from services.workspace.keys import stage_prefix
from services.workspace.streams import full_disk_is_transient
from tests.conftest import TEST_DB, TEST_ROOT
from tests.fixtures import ApiClient, WorkerPool, start_worker, stop_worker
from tests.local_http import serving_bytes
from tests.media import make_clip

pytestmark = pytest.mark.integration

ATTEMPTS = 2


@pytest.fixture(scope="module")
def source_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 2 s clip of a few hundred kB over HTTP: a URL job's fetch writes it to scratch and
    to the workspace."""
    clip = make_clip(tmp_path_factory.mktemp("faults") / "clip.mp4", width=640, height=360, seconds=2)
    with serving_bytes(clip.read_bytes(), "clip.mp4") as url:
        yield url


def retries(job_id: str) -> list[str]:
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={TEST_DB}") as conn:
        rows = conn.execute(
            "SELECT data->>'code' FROM job_events WHERE job_id = %s AND type = 'stage.retrying' ORDER BY id",
            (job_id,),
        ).fetchall()
    return [code for (code,) in rows]


def fails_transiently_with(
    code: str,
    client: ApiClient,
    worker_pool: WorkerPool,
    source_url: str,
    env: dict[str, str],
    wrapper: list[str] | None = None,
) -> dict[str, Any]:
    """A URL job's fetch on a worker with `env`, retried as transient until its attempts are
    used: the job, once failed."""
    worker_pool.stop_default()
    # With the sweeper (the maintenance queue, beat): it sends a retry once its delay is over.
    worker = start_worker(
        "faulty",
        "fetch,maintenance",
        beat=True,
        concurrency=1,
        env={"STAGE_MAX_ATTEMPTS": str(ATTEMPTS)} | env,
        wrapper=wrapper or [],
    )
    try:
        job_id = client.post("/api/v1/jobs", json={"source": {"url": source_url}}).json()["id"]
        job = client.wait_for_job(job_id, timeout=120)
    finally:
        stop_worker(worker)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == code, job["error"]
    fetch = job["stages"][0]
    assert (fetch["status"], fetch["attempts"]) == ("failed", ATTEMPTS)
    assert retries(job_id) == [code] * (ATTEMPTS - 1)  # transient: retried
    return job


@pytest.mark.parametrize(
    ("env", "says"),
    [
        pytest.param(
            {"WORKSPACE_URL": "s3://no-such-workspace/work"},
            "'no-such-workspace' does not exist",
            id="bucket-missing",
        ),
        pytest.param(
            {"WORKSPACE_S3_ENDPOINT_URL": "http://127.0.0.1:9"},
            "EndpointConnectionError",
            id="store-unreachable",
        ),
    ],
)
def test_a_workspace_that_is_not_there_is_transient_storage_failed(
    client: ApiClient, worker_pool: WorkerPool, source_url: str, env: dict[str, str], says: str
) -> None:
    job = fails_transiently_with("storage_failed", client, worker_pool, source_url, env)
    assert says in job["error"]["message"]


def test_a_full_scratch_disk_is_transient_disk_full_and_leaves_nothing(
    client: ApiClient, worker_pool: WorkerPool, source_url: str
) -> None:
    """The worker's scratch is a 64 kB tmpfs of its own (a mount namespace): the source does
    not fit. Nothing of the failed attempts may be left visible in the workspace."""
    scratch = TEST_ROOT / "tiny-scratch"
    scratch.mkdir(exist_ok=True)
    tiny = ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
            f'mount -t tmpfs -o size=64k tmpfs {scratch}; exec "$@"', "tiny"]  # fmt: skip
    job = fails_transiently_with(
        "disk_full", client, worker_pool, source_url, {"SCRATCH_DIR": str(scratch)}, tiny
    )
    assert "scratch folder" in job["error"]["message"] and "is full" in job["error"]["message"]
    workspace = open_workspace(get_settings())
    prefix = stage_prefix(uuid.UUID(job["id"]), "fetch")
    assert not workspace.exists(prefix)
    assert [upload.key for upload in workspace.incomplete_uploads() if upload.key.startswith(prefix)] == []


def test_ffmpeg_out_of_space_is_disk_full_even_when_it_exits_0() -> None:
    # /dev/full answers every write with ENOSPC, as a full scratch disk would.
    args = ["ffmpeg", "-nostdin", "-v", "error", "-progress", "pipe:1", "-y", "-f", "lavfi",
            "-i", "testsrc2=size=160x120:rate=10:duration=2", "-f", "mpegts", "/dev/full"]  # fmt: skip
    assert subprocess.run(args, capture_output=True, check=False).returncode == 0  # ffmpeg 5.1
    with pytest.raises(DiskFull) as caught:
        run_ffmpeg(args, duration=2)
    assert caught.value.transient and "No space left on device" in caught.value.message


def test_a_full_disk_under_python_is_disk_full(tmp_path: Path) -> None:
    with pytest.raises(DiskFull) as caught, full_disk_is_transient("The scratch folder"):
        Path("/dev/full").write_bytes(b"x" * 65536)
    assert caught.value.transient and "The scratch folder is full" in caught.value.message
    with pytest.raises(FileNotFoundError), full_disk_is_transient("The scratch folder"):
        (tmp_path / "missing" / "file").write_bytes(b"x")  # other errors pass through unchanged
