"""Playback that never expires: a job's links point at the API, which serves the playlists
stored verbatim with freshly presigned URLs inside. With S3_PRESIGN_SECONDS of two seconds,
a URL handed out once stops working, and the same playback link still plays every segment
afterwards; a wrong token is a 404, and revoking makes the old links 404."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import m3u8
import pytest
import requests

from services.config import Settings
from tests.fixtures import ApiClient, WorkerProcess, wait_until
from tests.media import make_clip, make_multilingual_clip
from tests.ops_fixtures import api_server

pytestmark = pytest.mark.integration

PRESIGN_SECONDS = 2


def on(base: str, url: str) -> str:
    """The same path on another API process (same secret key: the same links work there)."""
    parts = urlsplit(url)
    return base + parts.path


def segments(master_url: str) -> list[str]:
    """Every segment (and init file) URL reachable from the master, read through the API now."""
    answer = requests.get(master_url, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    master = m3u8.loads(answer.text, uri=master_url)
    found = []
    for variant in [*master.playlists, *master.media]:
        if not variant.uri:
            continue
        media = m3u8.loads(requests.get(variant.absolute_uri, timeout=10).text, uri=variant.absolute_uri)
        found += [segment.absolute_uri for segment in media.segments]
        found += [segment_map.absolute_uri for segment_map in media.segment_map or []]
    return found


def test_an_old_job_keeps_playing_after_the_presigned_lifetime(
    client: ApiClient, other_client: ApiClient, workers: WorkerProcess, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "play.mp4", width=640, height=360, seconds=3)
    job = client.wait_for_job(client.upload(clip, {"renditions": ["240p", "360p"]}).json()["id"])
    assert job["status"] == "succeeded", job
    result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
    assert result["playback_url"].startswith(client.base + "/api/v1/playback/")
    assert "X-Amz-Signature" not in result["playback_url"]

    with api_server(Settings(s3_presign_seconds=PRESIGN_SECONDS)) as short:
        master_url = on(short, result["playback_url"])
        first = segments(master_url)
        assert len(first) >= 4 and all("X-Amz-Signature" in url for url in first)
        assert requests.get(first[0], timeout=10).status_code == 200
        # The URL handed out above expires...
        wait_until(
            lambda: requests.get(first[0], timeout=10).status_code == 403,
            timeout=60,
            interval=0.5,
            what="a presigned segment URL to expire",
        )
        # ...and the job's playback link, the same as before, plays every segment still.
        for url in segments(master_url):
            assert requests.get(url, timeout=10).status_code == 200, url
        poster = requests.get(on(short, result["poster_url"]), timeout=10)
        assert poster.status_code == 200 and poster.headers["Content-Type"] == "image/jpeg"
        vtt = requests.get(on(short, result["storyboard"]["vtt_url"]), timeout=10)
        sprite = next(line for line in vtt.text.splitlines() if "#xywh=" in line).split("#")[0]
        assert requests.get(sprite, timeout=10).status_code == 200

    wrong = (
        result["playback_url"].replace("/master.m3u8", "").rsplit("/", 1)[0] + "/not-the-token/master.m3u8"
    )
    assert requests.get(wrong, timeout=10).status_code == 404
    assert (
        requests.get(result["playback_url"].replace("master.m3u8", "../../x"), timeout=10).status_code == 404
    )
    assert other_client.post(f"/api/v1/jobs/{job['id']}/playback/revoke").status_code == 404
    revoked = client.post(f"/api/v1/jobs/{job['id']}/playback/revoke")
    assert revoked.status_code == 200
    assert requests.get(result["playback_url"], timeout=10).status_code == 404
    assert requests.get(revoked.json()["playback_url"], timeout=10).status_code == 200


def test_sound_subtitles_and_dash_play_through_the_api(
    client: ApiClient, workers: WorkerProcess, tmp_path: Path
) -> None:
    """The DASH manifest, sound and subtitle renditions are served like playlists: every URL
    inside signed now, whatever the lifetime of the ones handed out before."""
    clip = make_multilingual_clip(tmp_path / "two.mkv", seconds=2.0, subtitle="Served subtitles")
    answer = client.upload(clip, {"renditions": ["240p"], "segment_format": "fmp4"})
    job = client.wait_for_job(answer.json()["id"])
    assert job["status"] == "succeeded", job
    result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
    for track in result["audio"]:
        assert track["url"].startswith(client.base + "/api/v1/playback/")
        assert "#EXTINF" in requests.get(track["url"], timeout=10).text
    [subtitle] = result["subtitles"]
    assert "Served subtitles" in requests.get(subtitle["url"], timeout=10).text
    manifest = requests.get(result["dash_url"], timeout=10)
    assert manifest.status_code == 200 and manifest.headers["Content-Type"].startswith("application/dash+xml")
    root = ET.fromstring(manifest.text)
    urls = [
        e.get("sourceURL") or e.get("media")
        for e in root.iter()
        if e.tag.endswith(("Initialization", "SegmentURL"))
    ]
    assert len(urls) >= 2 * 3  # an init section and segments for the video and both sound tracks
    for url in urls:
        assert url and "X-Amz-Signature=" in url
        assert requests.get(url, timeout=10).status_code == 200
