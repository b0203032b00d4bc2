"""Stopping a running transcode for real: a cancel through the API, a stage time limit from
settings, and a worker killed outright. Each time ffmpeg must be gone, its scratch folder
removed, and nothing half-made published; a canceled job's workspace objects are removed, a
failed one's kept (for inspection) under the failed attempt's own prefix alone."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from services.config import get_settings
from services.storage import ensure_bucket, make_s3_client
from services.workspace import open_workspace
from services.workspace.keys import attempt_prefix, job_prefix
from tests.fixtures import (
    REPO,
    ApiClient,
    WorkerProcess,
    queue_taken_off,
    start_worker,
    stop_worker,
    wait_until,
)
from tests.media import make_long_flat_clip
from tests.processes import ffmpeg_for

pytestmark = pytest.mark.integration

# Parts of two hours: the hour-long clip is one part, run whole under the stage's own limits.
WHOLE_FILE = {"PART_SECONDS": "7200"}


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_long_flat_clip(tmp_path_factory.mktemp("long"))


def in_workspace(prefix: str) -> list[str]:
    return [stored.key for stored in open_workspace(get_settings()).objects(prefix)]


def scratch_of(ffmpeg: psutil.Process) -> Path:
    """The attempt's scratch folder: where the one input ffmpeg was handed lies."""
    args = ffmpeg.cmdline()
    source = Path(args[args.index("-i") + 1])
    assert source.is_absolute() and source.name == "source" and source.is_file(), args
    return source.parent


def published_keys(job_id: str) -> list[str]:
    settings = get_settings()
    client = make_s3_client(settings)
    ensure_bucket(client, settings.s3_bucket)  # run alone, this module never publishes anything
    listed = client.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"hls/{job_id}/")
    return [item["Key"] for item in listed.get("Contents", [])]


def stage(job: dict[str, object], name: str) -> dict[str, object]:
    return next(s for s in job["stages"] if s["name"] == name)  # type: ignore[attr-defined, index]


@pytest.fixture
def video_queue_on_a_whole_file_worker(workers: WorkerProcess) -> Iterator[WorkerProcess]:
    """The `video` queue served alone by a worker whose parts are two hours long: the hour-long
    clip is one part, transcoded whole by one ffmpeg (test_parts.py cancels parts)."""
    with queue_taken_off("video", workers.name):
        whole = start_worker("whole-file", "video", concurrency=1, env=WHOLE_FILE)
        try:
            yield whole
        finally:
            stop_worker(whole)


def test_cancel_stops_the_running_ffmpeg_within_two_seconds(
    client: ApiClient, video_queue_on_a_whole_file_worker: WorkerProcess, long_clip: Path
) -> None:
    job_id = client.upload(long_clip).json()["id"]
    marker = f"{job_id}-transcode-"
    (running,) = wait_until(lambda: ffmpeg_for(marker), timeout=60, what="the transcode's ffmpeg")
    worker = video_queue_on_a_whole_file_worker
    worker_tree = {p.pid for p in psutil.Process(worker.proc.pid).children(recursive=True)}
    assert running.pid in worker_tree
    scratch = scratch_of(running)
    attempt = attempt_prefix(uuid.UUID(job_id), "transcode", 1)
    # Segments go up to the attempt's prefix while ffmpeg still writes the next ones.
    wait_until(lambda: in_workspace(f"{attempt}240p/"), timeout=30, what="segments in the workspace")

    answer = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert answer.status_code == 202, answer.text
    wait_until(lambda: not ffmpeg_for(marker), timeout=2.0, interval=0.05, what="ffmpeg to end")

    job = client.wait_for_job(job_id, timeout=30)
    assert job["status"] == "canceled"
    assert job["error"]["code"] == "canceled"
    assert stage(job, "transcode")["status"] == "canceled"
    for later in ("upload", "analyze"):
        assert stage(job, later)["attempts"] == 0, job["stages"]
        assert stage(job, later)["status"] in ("pending", "canceled", "skipped")
    wait_until(lambda: not scratch.exists(), timeout=10, what="the attempt's scratch to be removed")
    prefix = job_prefix(uuid.UUID(job_id))
    wait_until(lambda: not in_workspace(prefix), timeout=15, what="the canceled job's objects to be removed")
    assert published_keys(job_id) == []


@pytest.fixture
def video_queue_on_a_limited_worker(workers: WorkerProcess) -> Iterator[WorkerProcess]:
    """The shared worker stops taking transcodes while a worker with a 3 s transcode limit
    serves the `video` queue alone."""
    with queue_taken_off("video", workers.name):
        env = WHOLE_FILE | {"STAGE_TIME_LIMITS": json.dumps({"transcode": [3, 6]})}
        limited = start_worker("limited", "video", concurrency=1, env=env)
        try:
            yield limited
        finally:
            stop_worker(limited)


def test_time_limit_fails_the_job_with_timeout_and_leaves_no_ffmpeg(
    client: ApiClient, video_queue_on_a_limited_worker: WorkerProcess, long_clip: Path
) -> None:
    job_id = client.upload(long_clip).json()["id"]
    marker = f"{job_id}-transcode-"
    (running,) = wait_until(lambda: ffmpeg_for(marker), timeout=60, what="the transcode's ffmpeg")
    scratch = scratch_of(running)
    job = client.wait_for_job(job_id, timeout=90)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "timeout"
    transcode = stage(job, "transcode")
    assert transcode["status"] == "failed"
    assert transcode["error"]["code"] == "timeout"  # type: ignore[index]
    assert stage(job, "upload")["attempts"] == 0
    wait_until(lambda: not ffmpeg_for(marker), timeout=5, what="no ffmpeg left for the job")
    wait_until(lambda: not scratch.exists(), timeout=10, what="the attempt's scratch to be removed")
    assert published_keys(job_id) == []
    # Kept for inspection (WORKSPACE_KEEP_FAILED_SECONDS): the upload, and what the failed
    # attempt had sent up, under its own prefix and nowhere else.
    stored = in_workspace(job_prefix(uuid.UUID(job_id)))
    transcoded = [key for key in stored if "/transcode/" in key]
    assert transcoded and all(
        key.startswith(attempt_prefix(uuid.UUID(job_id), "transcode", 1)) for key in transcoded
    )
    assert not [key for key in stored if "/transcode/" not in key and "/source/" not in key]


RUN_FOREVER = """
import sys
from services.media.ffmpeg import run_ffmpeg
args = ["ffmpeg", "-nostdin", "-v", "error", "-progress", "pipe:1", "-re", "-f", "lavfi",
        "-i", "testsrc2=size=160x120:rate=10:duration=600", "-f", "null", sys.argv[1]]
run_ffmpeg(args, duration=600, timeout=600)
"""


def test_ffmpeg_dies_with_a_worker_killed_outright(tmp_path: Path) -> None:
    # SIGKILL skips every cleanup of ours (what a hard time limit or the OOM killer does).
    marker = str(tmp_path / "null-output")
    parent = subprocess.Popen([sys.executable, "-c", RUN_FOREVER, marker], cwd=REPO)
    try:
        wait_until(lambda: ffmpeg_for(marker), timeout=30, what="ffmpeg under the doomed parent")
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(lambda: not ffmpeg_for(marker), timeout=5, what="the orphaned ffmpeg to die")
    finally:
        parent.kill()
        parent.wait()
