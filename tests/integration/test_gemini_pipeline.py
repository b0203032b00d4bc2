"""Whole jobs with Google in the loop: a worker process whose settings point at the local
Gemini/Vertex stand-in runs every stage; the API, PostgreSQL, Redis and S3 are the real ones."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import m3u8
import pytest
import requests
from sqlalchemy.orm import Session, sessionmaker

from services.apikeys import set_entitlements
from services.config import get_settings
from services.storage import ensure_bucket, make_s3_client
from tests.fixtures import ApiClient, WorkerPool, WorkerProcess, make_key, start_worker, stop_worker
from tests.gemini_server import TRANSCRIPT, FakeGoogle, serving, worker_env
from tests.media import make_clip, make_multilingual_clip

pytestmark = pytest.mark.integration

SOURCE_BUCKET = "conveyor-sources"


@pytest.fixture(scope="module")
def google(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGoogle]:
    clip = make_clip(tmp_path_factory.mktemp("veo") / "veo.mp4", width=640, height=360, seconds=2)
    with serving(clip.read_bytes()) as server:
        yield server


@pytest.fixture(scope="module")
def google_worker(worker_pool: WorkerPool, google: FakeGoogle) -> Iterator[WorkerProcess]:
    # The suite's default worker has no Google settings and would compete for the same queues;
    # tests that come later get it back from the pool.
    worker_pool.stop_default()
    env = worker_env(google) | {"S3_SOURCE_BUCKETS": json.dumps([SOURCE_BUCKET])}
    worker = start_worker("google", env=env)
    yield worker
    stop_worker(worker)


@pytest.fixture
def entitled(api_url: str, sessions: sessionmaker[Session]) -> ApiClient:
    """A key allowed to send its videos to Google and to read the source bucket."""
    key = make_key(sessions, "google-tenant")
    with sessions.begin() as session:
        set_entitlements(
            session, key[:12], {"analysis_backends": ["local", "gemini"], "source_buckets": [SOURCE_BUCKET]}
        )
    return ApiClient(api_url, key)


@pytest.fixture
def fake(google: FakeGoogle) -> FakeGoogle:
    google.reset()
    return google


def streams(url: str) -> list[dict[str, Any]]:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", url],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    found: list[dict[str, Any]] = json.loads(probe.stdout)["streams"]
    return found


def test_upload_job_is_analyzed_by_gemini_and_captioned(
    entitled: ApiClient, google_worker: WorkerProcess, fake: FakeGoogle, tmp_path: Path
) -> None:
    client = entitled
    clip = make_clip(tmp_path / "talk.mp4", width=1280, height=720, seconds=3)
    answer = client.upload(clip, {"analysis": {"backend": "gemini"}})
    assert answer.status_code == 202, answer.text
    job = client.wait_for_job(answer.json()["id"])
    assert job["status"] == "succeeded", (job, google_worker.log()[-3000:])
    result = job["result"]

    analysis = result["analysis"]
    assert (analysis["backend"], analysis["rendition"]) == ("gemini", "360p")
    assert analysis["transcript"] == TRANSCRIPT
    [name] = fake.received
    assert fake.deleted == [name]

    [caption] = result["captions"]
    assert (caption["language"], caption["name"]) == ("en", "English")
    vtt = requests.get(caption["url"], timeout=10)
    assert vtt.status_code == 200 and vtt.headers["Content-Type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:")
    assert "00:00:00.200 --> 00:00:01.400\nWelcome to the test pattern." in vtt.text

    master = m3u8.loads(requests.get(result["playback_url"], timeout=10).text, uri=result["playback_url"])
    [sound, media] = master.media
    assert (sound.type, sound.group_id, sound.default) == ("AUDIO", "audio", "YES")
    assert (media.type, media.group_id, media.language) == ("SUBTITLES", "subs", "en")
    assert [p.stream_info.subtitles for p in master.playlists] == ["subs"] * 4
    # Through the API: the subtitle playlist's WebVTT is a freshly signed URL of the bucket.
    subtitles = m3u8.loads(requests.get(media.absolute_uri, timeout=10).text)
    assert "X-Amz-Signature=" in subtitles.segments[0].uri
    assert requests.get(subtitles.segments[0].uri, timeout=10).text == vtt.text
    for playlist in master.playlists:
        assert playlist.absolute_uri.startswith(result["playback_url"].rsplit("/", 1)[0])
        assert requests.get(playlist.absolute_uri, timeout=10).status_code == 200


def test_captions_join_the_sources_subtitles_and_gemini_hears_the_sound(
    entitled: ApiClient, google_worker: WorkerProcess, fake: FakeGoogle, tmp_path: Path
) -> None:
    client = entitled
    clip = make_multilingual_clip(tmp_path / "two.mkv", subtitle="Subtitle from the file")
    answer = client.upload(clip, {"renditions": ["360p"], "analysis": {"backend": "gemini"}})
    assert answer.status_code == 202, answer.text
    job = client.wait_for_job(answer.json()["id"])
    assert job["status"] == "succeeded", (job, google_worker.log()[-3000:])
    result = job["result"]
    # What Gemini got is the picture with its (default) sound: they live in separate renditions.
    [uploaded] = fake.received.values()
    sent = tmp_path / "sent.mp4"
    sent.write_bytes(uploaded)
    assert sorted(s["codec_type"] for s in streams(str(sent))) == ["audio", "video"]

    master = m3u8.loads(requests.get(result["playback_url"], timeout=10).text, uri=result["playback_url"])
    subtitles = [(m.name, m.language, m.default) for m in master.media if m.type == "SUBTITLES"]
    assert subtitles == [("English", "en", "NO"), ("English (captions)", "en", "YES")]
    assert [m.language for m in master.media if m.type == "AUDIO"] == ["en", "fr"]
    assert [p.stream_info.subtitles for p in master.playlists] == ["subs"]
    [source_track] = result["subtitles"]
    assert "Subtitle from the file" in requests.get(source_track["url"], timeout=10).text
    [caption] = result["captions"]
    assert "Welcome to the test pattern." in requests.get(caption["url"], timeout=10).text


def test_s3_source_job(
    client: ApiClient, entitled: ApiClient, google_worker: WorkerProcess, fake: FakeGoogle, tmp_path: Path
) -> None:
    s3 = make_s3_client(get_settings())
    ensure_bucket(s3, SOURCE_BUCKET)
    clip = make_clip(tmp_path / "stored.mp4", width=640, height=360, seconds=2)
    s3.upload_file(str(clip), SOURCE_BUCKET, "incoming/stored.mp4")

    source = {"s3": {"bucket": SOURCE_BUCKET, "key": "incoming/stored.mp4"}}
    # A key the bucket was not granted to may not read it, whatever S3_SOURCE_BUCKETS says.
    assert (
        client.post("/api/v1/jobs", json={"source": source}).json()["error"]["code"] == "bucket_not_allowed"
    )
    # No backend named: local, even for a key allowed Gemini on a worker with GOOGLE_API_KEY set.
    answer = entitled.post("/api/v1/jobs", json={"source": source})
    assert answer.status_code == 202, answer.text
    job = entitled.wait_for_job(answer.json()["id"])
    assert job["status"] == "succeeded", (job, google_worker.log()[-3000:])
    assert [r["name"] for r in job["result"]["renditions"]] == ["240p", "360p"]
    assert job["result"]["captions"] == []
    assert job["result"]["analysis"]["backend"] == "local"
    assert not fake.received  # nothing of the video went to Google


def test_generate_source_job(client: ApiClient, google_worker: WorkerProcess, fake: FakeGoogle) -> None:
    answer = client.post(
        "/api/v1/jobs",
        json={
            "source": {"generate": {"prompt": "A paper boat on a rainy street", "duration_seconds": 4}},
            "options": {"analysis": {"backend": "local"}},
        },
    )
    assert answer.status_code == 202, answer.text
    job = client.wait_for_job(answer.json()["id"])
    assert job["status"] == "succeeded", (job, google_worker.log()[-3000:])
    assert len(fake.calls("POST", ":predictLongRunning$")) == 1
    top = job["result"]["renditions"][-1]
    assert top["name"] == "360p"
    video = next(s for s in streams(top["url"]) if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (640, 360)


def test_refused_generation_fails_the_job_with_a_stable_code(
    client: ApiClient, google_worker: WorkerProcess, fake: FakeGoogle
) -> None:
    fake.switches.safety = True
    answer = client.post("/api/v1/jobs", json={"source": {"generate": {"prompt": "something refused"}}})
    job = client.wait_for_job(answer.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "content_blocked"
    assert job["stages"][0]["attempts"] == 1  # permanent: not retried
