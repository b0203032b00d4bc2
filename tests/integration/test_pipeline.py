"""The whole path on real services: upload over HTTP → five stages on real Celery workers →
HLS in S3 read back over HTTP → analysis → a signed webhook verified on a real receiver; on
the object-store workspace (the default) and on a file:// one (one host)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import m3u8
import pytest
import requests
from standardwebhooks import Webhook

from services.config import get_settings
from services.workspace import FileWorkspace, Workspace, open_workspace
from services.workspace.keys import attempt_prefix, job_prefix
from tests.conftest import TEST_ROOT
from tests.fixtures import (
    ApiClient,
    WebhookReceiver,
    WorkerPool,
    WorkerProcess,
    start_worker,
    stop_worker,
    wait_until,
)
from tests.media import make_clip
from tests.ops_fixtures import api_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clip_720p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4", width=1280, height=720, seconds=3)


@dataclass
class Deployment:
    client: ApiClient
    workspace: Workspace


@pytest.fixture(params=["s3", "file"])
def deployment(
    request: pytest.FixtureRequest, worker_pool: WorkerPool, api_url: str, api_key: str
) -> Iterator[Deployment]:
    """The API and the workers on one workspace: the suite's (the object store), or a folder."""
    if request.param == "s3":
        worker_pool.ensure_default()
        yield Deployment(ApiClient(api_url, api_key), open_workspace(get_settings()))
        return
    worker_pool.stop_default()
    url = f"file://{TEST_ROOT}/file-workspace"
    # Its retention runs rarely, so the test can see the job's files in the folder.
    worker = start_worker(
        "file-workspace", env={"WORKSPACE_URL": url, "WORKSPACE_CLEAN_INTERVAL_SECONDS": "3600"}
    )
    try:
        with api_server(get_settings().model_copy(update={"workspace_url": url})) as api:
            yield Deployment(ApiClient(api, api_key), FileWorkspace(TEST_ROOT / "file-workspace"))
    finally:
        stop_worker(worker)


def test_upload_to_hls_analysis_and_webhook(
    deployment: Deployment, webhook_receiver: WebhookReceiver, clip_720p: Path
) -> None:
    client = deployment.client
    answer = client.upload(clip_720p, {"webhook_url": webhook_receiver.url})
    assert answer.status_code == 202, answer.text
    submitted = answer.json()
    assert submitted["status"] == "queued"
    assert [stage["name"] for stage in submitted["stages"]] == [
        "fetch",
        "transcode",
        "upload",
        "analyze",
        "notify",
    ]

    job = client.wait_for_job(submitted["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == 100
    assert all(stage["status"] == "succeeded" for stage in job["stages"][:4]), job["stages"]
    assert job["finished_at"] is not None

    result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
    assert result == job["result"]
    names = [rendition["name"] for rendition in result["renditions"]]
    assert names == ["240p", "360p", "480p", "720p"]  # none above the 720p source

    # Through the API: the master links its renditions relative to itself (same token).
    master = m3u8.loads(requests.get(result["playback_url"], timeout=10).text, uri=result["playback_url"])
    assert master.is_variant
    resolutions = sorted(playlist.stream_info.resolution for playlist in master.playlists)
    assert resolutions == [(426, 240), (640, 360), (854, 480), (1280, 720)]
    for playlist in master.playlists:
        assert playlist.stream_info.bandwidth > 0
        assert playlist.stream_info.codecs.startswith("avc1.")
        media = m3u8.loads(requests.get(playlist.absolute_uri, timeout=10).text)
        assert media.is_endlist
        assert abs(sum(segment.duration for segment in media.segments) - 3.0) < 0.2
        segment = requests.get(media.segments[0].uri, timeout=10)
        assert segment.status_code == 200
        assert segment.headers["Content-Type"] == "video/mp2t"

    top = next(r for r in result["renditions"] if r["name"] == "720p")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-count_frames", top["url"]],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    streams = json.loads(probe.stdout)["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (1280, 720)
    assert int(video["nb_read_frames"]) == 90
    assert [s["codec_type"] for s in streams] == ["video"]  # the sound is its own rendition
    [sound] = result["audio"]
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", sound["url"]],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    [audio] = json.loads(probe.stdout)["streams"]
    assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "48000", 2)
    assert all(r["quality"]["metric"] == "vmaf" for r in result["renditions"])

    analysis = result["analysis"]
    assert analysis["backend"] == "local"
    assert abs(analysis["duration"] - 3.0) <= 0.2
    assert (analysis["width"], analysis["height"]) == (1280, 720)
    assert analysis["loudness"]["integrated_lufs"] < 0

    assert webhook_receiver.event.wait(30), "no webhook arrived"
    headers, body = webhook_receiver.received[-1]
    secret = client.get("/api/v1/webhook-secret").json()["secret"]
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == job["id"]
    assert payload["data"]["result"]["playback_url"] == result["playback_url"]
    assert headers["webhook-id"].startswith(f"msg_{job['id'].replace('-', '')}_")

    job_id = uuid.UUID(job["id"])
    if isinstance(deployment.workspace, FileWorkspace):
        # The stages handed each other files in the folder, each attempt under its own prefix.
        assert deployment.workspace.exists(attempt_prefix(job_id, "transcode", 1) + "master.m3u8")
        assert not open_workspace(get_settings()).exists(job_prefix(job_id))
    else:
        # The retention task (beat) removes a succeeded job's workspace objects.
        wait_until(
            lambda: not deployment.workspace.exists(job_prefix(job_id)),
            timeout=20,
            what="the succeeded job's workspace to be cleaned",
        )


def test_a_sound_only_upload_goes_through_all_five_stages(
    client: ApiClient, workers: WorkerProcess, tmp_path: Path
) -> None:
    """No picture: an audio rendition, no poster or storyboard, and an analysis of the sound
    alone (1 s tone, 1 s silence, 1 s tone)."""
    tone = tmp_path / "tone.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1",
         "-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono:d=1",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1",
         "-filter_complex", "[0:a][1:a][2:a]concat=n=3:v=0:a=1[a]", "-map", "[a]",
         "-c:a", "aac", "-b:a", "96k", str(tone)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    job = client.wait_for_job(client.upload(tone).json()["id"])
    assert job["status"] == "succeeded", job
    assert all(stage["status"] == "succeeded" for stage in job["stages"][:4]), job["stages"]

    result = job["result"]
    assert result["renditions"] == []
    [sound] = result["audio"]
    assert (sound["name"], sound["default"]) == ("audio-0", True)
    assert result["poster_url"] is None and result["storyboard"] is None
    master = m3u8.loads(requests.get(result["playback_url"], timeout=10).text, uri=result["playback_url"])
    [variant] = master.playlists
    media = m3u8.loads(requests.get(variant.absolute_uri, timeout=10).text)
    assert abs(sum(segment.duration for segment in media.segments) - 3.0) < 0.2
    assert requests.get(media.segments[0].uri, timeout=10).status_code == 200

    analysis = result["analysis"]
    assert (analysis["has_video"], analysis["has_audio"]) == (False, True)
    assert analysis["scene_cuts"] == analysis["black_segments"] == []
    [silence] = analysis["silences"]
    assert abs(silence["start"] - 1.0) <= 0.15 and abs(silence["end"] - 2.0) <= 0.15
    assert analysis["loudness"]["integrated_lufs"] < 0
