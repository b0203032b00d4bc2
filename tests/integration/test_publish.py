"""Publishing to the real S3 server: files of a tier go up side by side, tiers one after the
other, so the master playlist is never readable before what it lists."""

from __future__ import annotations

import itertools
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import boto3
import pytest

from services.config import Settings, get_settings
from services.errors import StorageFailed
from services.hls import transcode_to_hls
from services.probe import probe
from services.storage import Delivery, ensure_bucket, make_s3_client, publish_hls, publish_tiers, publish_tree
from tests.media import make_multilingual_clip

pytestmark = pytest.mark.integration

BUCKET = "conveyor-publish-tests"


def hls_tree(root: Path) -> Path:
    for rendition in ("240p", "360p", "720p"):
        folder = root / rendition
        folder.mkdir(parents=True)
        for n in range(4):
            (folder / f"seg_{n:05d}.ts").write_bytes(bytes([n]) * 1000)
        (folder / "index.m3u8").write_text(
            "#EXTM3U\n" + "".join(f"#EXTINF:4.0,\nseg_{n:05d}.ts\n" for n in range(4))
        )
    (root / "poster.jpg").write_bytes(b"\xff\xd8" + b"\0" * 500)
    (root / "storyboard.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:04.000\nsprite.jpg#xywh=0,0,160,90\n")
    (root / "sprite.jpg").write_bytes(b"\xff\xd8" + b"\0" * 500)
    (root / "master.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n240p/index.m3u8\n")
    return root


def test_tiers_put_the_master_last_and_playlists_after_their_segments(tmp_path: Path) -> None:
    tiers = publish_tiers((hls_tree(tmp_path)).rglob("*.*"))
    names = [sorted({path.suffix for path in tier}) for tier in tiers]
    assert names == [[".jpg", ".ts"], [".m3u8", ".vtt"], [".m3u8"]]
    assert [path.name for path in tiers[2]] == ["master.m3u8"]


def test_a_tier_is_complete_before_the_next_one_starts(s3_server: str, tmp_path: Path) -> None:
    client = make_s3_client(get_settings())
    ensure_bucket(client, BUCKET)
    clock, lock = itertools.count(), threading.Lock()
    started: dict[str, int] = {}
    finished: dict[str, int] = {}

    def on_start(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["published_key"] = params["Key"]
        with lock:
            started[params["Key"]] = next(clock)

    def on_finish(context: dict[str, Any], **_: Any) -> None:
        with lock:
            finished[context["published_key"]] = next(clock)

    client.meta.events.register("provide-client-params.s3.PutObject", on_start)
    client.meta.events.register("after-call.s3.PutObject", on_finish)
    delivery = Delivery(client=client, bucket=BUCKET, public_base_url=None, presign_seconds=600)
    progress: list[float] = []
    keys = publish_tree(delivery, hls_tree(tmp_path / "hls"), "jobs/one", progress.append)

    assert set(started) == set(finished) == set(keys.values())
    assert len(keys) == 3 * 5 + 4
    assert progress[-1] == 100.0 and progress == sorted(progress)
    tiers = [
        [keys[str(path.relative_to(tmp_path / "hls"))] for path in tier]
        for tier in publish_tiers((tmp_path / "hls").rglob("*.*"))
    ]
    for earlier, later in itertools.pairwise(tiers):
        assert max(finished[key] for key in earlier) < min(started[key] for key in later)
    # Stored verbatim, relative URIs and all: the API signs what it serves (api/playback.py),
    # so nothing in the bucket carries a URL that expires.
    stored = client.get_object(Bucket=BUCKET, Key="jobs/one/360p/index.m3u8")
    assert stored["ContentType"] == "application/vnd.apple.mpegurl"
    assert stored["Body"].read().decode() == (tmp_path / "hls" / "360p" / "index.m3u8").read_text()


def test_an_upload_boto3_gives_up_on_is_a_storage_failure(s3_server: str, tmp_path: Path) -> None:
    """boto3's transfer manager wraps what went wrong in S3UploadFailedError: a refusal (here,
    a wrong secret key) must come out as `storage_failed` (retried), not as a crash."""
    settings = get_settings()
    delivery = Delivery(
        client=boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id="conveyor-test",
            aws_secret_access_key="not-the-secret",
        ),
        bucket=BUCKET,
        public_base_url="http://cdn.example",
        presign_seconds=60,
        multipart_threshold=1024,
    )
    with pytest.raises(StorageFailed) as failure:
        publish_tree(delivery, hls_tree(tmp_path / "hls"), "hls/x")
    assert failure.value.transient


def test_audio_subtitles_and_dash_are_published_under_their_paths(s3_server: str, tmp_path: Path) -> None:
    """Sound and subtitle renditions and the DASH manifest are published as written, and named
    in the result by their paths (the API serves them with fresh URLs: test_playback.py)."""
    source = make_multilingual_clip(tmp_path / "two.mkv", seconds=2.0, subtitle="Published subtitles")
    settings = Settings(segment_seconds=1, quality_receipts=False)
    out = tmp_path / "hls"
    transcoded = transcode_to_hls(
        source, out, settings, info=probe(source), requested=["240p"], segment_format="fmp4",
        on_progress=lambda _: None, should_stop=lambda: False,
    )  # fmt: skip
    client = make_s3_client(get_settings())
    ensure_bucket(client, BUCKET)
    delivery = Delivery(client=client, bucket=BUCKET, public_base_url=None, presign_seconds=600)
    published = publish_hls(delivery, out, "jobs/dash", transcoded)

    assert [(a["name"], a["language"], a["url"]) for a in published["audio"]] == [
        ("audio-0", "en", "audio-0/index.m3u8"),
        ("audio-1", "fr", "audio-1/index.m3u8"),
    ]
    [subtitle] = published["subtitles"]
    assert published["dash_url"] == "manifest.mpd"

    def stored(path: str) -> str:
        body: bytes = client.get_object(Bucket=BUCKET, Key=f"jobs/dash/{path}")["Body"].read()
        return body.decode()

    for track in published["audio"]:
        assert stored(track["url"]) == (out / track["url"]).read_text()  # verbatim: relative URIs
    assert "Published subtitles" in stored(subtitle["url"])
    manifest = ET.fromstring(stored("manifest.mpd"))
    media = [e.get("sourceURL") or e.get("media") for e in manifest.iter() if e.tag.endswith("SegmentURL")]
    assert media and all(url and "://" not in url for url in media)
