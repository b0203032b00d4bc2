"""An attempt owns what it writes: a worker killed in the middle of a stage leaves nothing half
written visible, the next attempt writes under its own prefix, nothing the killed attempt
wrote is touched, and later stages read exactly the attempt that succeeded."""

from __future__ import annotations

import contextlib
import signal
import struct
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from services.config import get_settings
from services.workspace import StoredObject, Workspace, open_workspace
from services.workspace.keys import attempt_prefix
from services.workspace.multipart import PART_BYTES
from services.workspace.retention import abort_abandoned_uploads
from tests.conftest import TEST_DB
from tests.fixtures import ApiClient, WorkerPool, start_worker, stop_worker, wait_until
from tests.local_http import running
from tests.media import make_clip

pytestmark = pytest.mark.integration

SOURCE_BYTES = 3 * PART_BYTES


def stage_output(job_id: str, stage: str) -> dict[str, Any]:
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={TEST_DB}") as conn:
        row = conn.execute(
            "SELECT output FROM job_stages WHERE job_id = %s AND name = %s", (job_id, stage)
        ).fetchone()
    assert row is not None
    output: dict[str, Any] = row[0]
    return output


def attempts(job: dict[str, Any], name: str) -> int:
    return int(next(stage["attempts"] for stage in job["stages"] if stage["name"] == name))


@pytest.fixture
def workspace(s3_server: str) -> Workspace:
    return open_workspace(get_settings())


class SlowThenFastSource(ThreadingHTTPServer):
    """Serves valid media padded to SOURCE_BYTES: slowly the first time (so a fetch can be
    killed mid-way), at once afterwards."""

    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        self.body, self.requests = body, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                slow = server.requests == 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    for start in range(0, len(server.body), 256 * 1024):
                        self.wfile.write(server.body[start : start + 256 * 1024])
                        if slow:
                            time.sleep(0.1)

            def log_message(self, *_: Any) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def padded_source(tmp_path: Path) -> Iterator[str]:
    head = make_clip(tmp_path / "head.mp4", seconds=1, extra=("-movflags", "+faststart")).read_bytes()
    padding = SOURCE_BYTES - len(head)
    body = head + struct.pack(">I4s", padding, b"free") + bytes(padding - 8)
    with running(SlowThenFastSource(body)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/source.mp4"


def test_a_fetch_killed_mid_upload_leaves_no_half_source(
    client: ApiClient, worker_pool: WorkerPool, workspace: Workspace, padded_source: str
) -> None:
    worker_pool.stop_default()
    doomed = start_worker("doomed-fetch", "fetch", concurrency=1)
    job_id = client.post("/api/v1/jobs", json={"source": {"url": padded_source}}).json()["id"]
    first = attempt_prefix(uuid.UUID(job_id), "fetch", 1)

    def started() -> list[str]:
        return [upload.key for upload in workspace.incomplete_uploads() if upload.key.startswith(first)]

    try:
        wait_until(started, timeout=60, what="the first attempt's upload to have parts")
    finally:
        stop_worker(doomed, sig=signal.SIGKILL)
    # Parts were sent, but a reader sees nothing: the upload was never completed.
    assert workspace.objects(first) == []
    assert started() == [first + "original"]

    worker_pool.ensure_default()  # its sweeper gives the stage to another attempt once the lease ends
    job = client.wait_for_job(job_id, timeout=180)
    assert job["status"] == "succeeded", job
    assert attempts(job, "fetch") == 2
    assert stage_output(job_id, "fetch")["key"] == attempt_prefix(uuid.UUID(job_id), "fetch", 2) + "original"
    # The killed attempt's upload is aborted once abandoned, and nothing of it ever showed.
    later = datetime.now(UTC) + timedelta(seconds=get_settings().workspace_abandoned_seconds + 60)
    assert abort_abandoned_uploads(workspace, get_settings(), now=later) >= 1
    assert started() == [] and workspace.objects(first) == []


@pytest.fixture(scope="module")
def long_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long enough that a transcode can be killed after some segments went up."""
    return make_clip(tmp_path_factory.mktemp("attempts") / "long.mp4", width=1280, height=720, seconds=40)


def fingerprint(objects: list[StoredObject]) -> dict[str, tuple[int, datetime]]:
    return {stored.key: (stored.size, stored.modified) for stored in objects}


def test_a_transcode_killed_mid_way_is_redone_under_its_own_prefix(
    client: ApiClient, worker_pool: WorkerPool, workspace: Workspace, long_source: Path
) -> None:
    worker_pool.stop_default()
    # Beat (the sweeper, on the maintenance queue) runs beside fetch and upload; retention
    # waits so the test can look.
    io = start_worker(
        "attempts-io",
        "fetch,upload,analyze,notify,maintenance",
        beat=True,
        env={"WORKSPACE_CLEAN_INTERVAL_SECONDS": "3600"},
    )
    first_video = start_worker("video-first", "video", concurrency=1)
    second_video = None
    try:
        job_id = client.upload(long_source).json()["id"]
        first = attempt_prefix(uuid.UUID(job_id), "transcode", 1)
        wait_until(
            lambda: workspace.exists(f"{first}240p/seg_00003.ts"),
            timeout=120,
            what="the first attempt's segments to go up while it encodes",
        )
        stop_worker(first_video, sig=signal.SIGKILL)
        left = fingerprint(workspace.objects(first))
        assert left and f"{first}master.m3u8" not in left  # it never finished

        second_video = start_worker("video-second", "video", concurrency=1)
        job = client.wait_for_job(job_id, timeout=300)
        assert job["status"] == "succeeded", job
        assert attempts(job, "transcode") == 2

        second = attempt_prefix(uuid.UUID(job_id), "transcode", 2)
        assert stage_output(job_id, "transcode")["prefix"] == second
        # Nothing the killed attempt wrote was touched, and nothing was added to its prefix.
        assert fingerprint(workspace.objects(first)) == left
        # What was published is the second attempt's: its segment count and bytes.
        rendition = job["result"]["renditions"][0]
        playlist = requests.get(rendition["url"], timeout=10).text
        segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
        stored = sorted(
            key
            for key in fingerprint(workspace.objects(f"{second}{rendition['name']}/"))
            if key.endswith(".ts")
        )
        assert len(segments) == len(stored) == 20
        assert requests.get(segments[-1], timeout=10).content == workspace.read_bytes(stored[-1])
    finally:
        for worker in (first_video, second_video, io):
            if worker is not None:
                stop_worker(worker)
