"""Poster and storyboard end to end: made by the transcode stage, published by upload, listed
in the job result, and fetched back over HTTP the way a player would; with fMP4 segments."""

from __future__ import annotations

import subprocess
from pathlib import Path

import m3u8
import pytest
import requests

from tests.fixtures import ApiClient, WorkerProcess
from tests.media import make_clip

pytestmark = pytest.mark.integration


def image_size(data: bytes) -> tuple[int, int]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", "-"],
        input=data, capture_output=True, check=True,
    )  # fmt: skip
    codec, width, height = done.stdout.decode().strip().split(",")
    assert codec == "mjpeg"
    return int(width), int(height)


def cues(vtt: str) -> list[tuple[str, str]]:
    assert vtt.startswith("WEBVTT")
    blocks = [block.splitlines() for block in vtt.strip().split("\n\n")[1:]]
    return [(timing, target) for timing, target in blocks]


def test_poster_storyboard_and_fmp4_are_published_and_listed(
    client: ApiClient, workers: WorkerProcess, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", width=640, height=360, seconds=6, fps=15)
    answer = client.upload(clip, {"segment_format": "fmp4", "renditions": ["240p", "360p"]})
    assert answer.status_code == 202, answer.text
    job = client.wait_for_job(answer.json()["id"])
    assert job["status"] == "succeeded", job
    result = job["result"]

    poster = requests.get(result["poster_url"], timeout=10)
    assert poster.status_code == 200
    assert poster.headers["Content-Type"] == "image/jpeg"
    assert image_size(poster.content) == (640, 360)

    board = result["storyboard"]
    assert (board["interval"], board["count"], board["columns"], board["rows"]) == (5.0, 2, 2, 1)
    assert (board["tile_width"], board["tile_height"]) == (160, 90)
    vtt = requests.get(board["vtt_url"], timeout=10)
    assert vtt.headers["Content-Type"].startswith("text/vtt")
    listed = cues(vtt.text)
    assert [timing for timing, _ in listed] == [
        "00:00:00.000 --> 00:00:05.000",
        "00:00:05.000 --> 00:00:06.000",
    ]
    regions = [target.rpartition("#")[2] for _, target in listed]
    assert regions == ["xywh=0,0,160,90", "xywh=160,0,160,90"]
    # Each cue's image URL works as given (signed when the bucket is private).
    sprite = requests.get(listed[0][1].rpartition("#")[0], timeout=10)
    assert sprite.status_code == 200
    assert image_size(sprite.content) == (2 * 160, 90)
    assert requests.get(board["sprite_url"], timeout=10).content == sprite.content

    master = m3u8.loads(requests.get(result["playback_url"], timeout=10).text, uri=result["playback_url"])
    assert [p.stream_info.resolution for p in master.playlists] == [(426, 240), (640, 360)]
    for variant in master.playlists:
        assert variant.stream_info.frame_rate == 15.0
        media = m3u8.loads(requests.get(variant.absolute_uri, timeout=10).text)
        assert requests.get(media.segment_map[0].uri, timeout=10).status_code == 200
        segment = requests.get(media.segments[0].uri, timeout=10)
        assert segment.headers["Content-Type"] == "video/iso.segment"
    assert [r["name"] for r in result["renditions"]] == ["240p", "360p"]
