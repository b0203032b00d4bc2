"""Publishing to the real S3 server: files of a tier go up side by side, tiers one after the
other, so the master playlist is never readable before what it lists; from the workspace, by
server-side copy when it is in the delivery's store, by streaming otherwise."""

from __future__ import annotations

import itertools
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from services.config import Settings, get_settings
from services.errors import Canceled, StorageFailed
from services.media.hls import transcode_to_hls
from services.media.probe import probe
from services.publishing import (
    PLAYLIST_CACHE,
    SEGMENT_CACHE,
    LocalFolder,
    WorkspaceFolder,
    publish_hls,
    publish_tiers,
    publish_tree,
)
from services.storage import Delivery, ensure_bucket, make_s3_client
from services.workspace import FileWorkspace, S3Workspace, Workspace, open_workspace
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
    tiers = publish_tiers(LocalFolder(hls_tree(tmp_path)).files())
    names = [sorted({Path(name).suffix for name in tier}) for tier in tiers]
    assert names == [[".jpg", ".ts"], [".m3u8", ".vtt"], [".m3u8"]]
    assert tiers[2] == ["master.m3u8"]


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
    keys = publish_tree(delivery, LocalFolder(hls_tree(tmp_path / "hls")), "jobs/one", progress.append)

    assert set(started) == set(finished) == set(keys.values())
    assert len(keys) == 3 * 5 + 4
    assert progress[-1] == 100.0 and progress == sorted(progress)
    tiers = [[keys[name] for name in tier] for tier in publish_tiers(LocalFolder(tmp_path / "hls").files())]
    for earlier, later in itertools.pairwise(tiers):
        assert max(finished[key] for key in earlier) < min(started[key] for key in later)
    # Stored as written, relative URIs and all: the API signs them when it serves the playlist.
    stored = client.get_object(Bucket=BUCKET, Key="jobs/one/360p/index.m3u8")
    assert stored["ContentType"] == "application/vnd.apple.mpegurl"
    assert stored["Body"].read().decode() == (tmp_path / "hls" / "360p" / "index.m3u8").read_text()


def counting(client: Any) -> Counter[str]:
    """The operations `client` sends, counted as they go."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.s3", count)
    return calls


def workspace_tree(workspace: Workspace, tmp_path: Path, prefix: str) -> dict[str, bytes]:
    local = hls_tree(tmp_path / "local")
    for name in LocalFolder(local).files():
        workspace.put_file(local / name, prefix + name)
    return {name: (local / name).read_bytes() for name in LocalFolder(local).files()}


def published(client: Any, prefix: str) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
    return {
        item["Key"][len(prefix) + 1 :]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        for item in listed
    }


def test_from_an_object_store_workspace_media_is_copied_server_side(s3_server: str, tmp_path: Path) -> None:
    settings = get_settings()
    workspace = open_workspace(settings)
    assert isinstance(workspace, S3Workspace)
    prefix = f"jobs/{uuid.uuid4()}/transcode/1/"
    written = workspace_tree(workspace, tmp_path, prefix)
    client = make_s3_client(settings)
    ensure_bucket(client, BUCKET)
    delivery = Delivery(
        client=client, bucket=BUCKET, public_base_url="https://cdn.example", presign_seconds=60
    )
    sent, read = counting(client), counting(workspace.client)

    keys = publish_tree(delivery, WorkspaceFolder(workspace, prefix), "copied")

    assert published(client, "copied") == written
    assert len(keys) == len(written)
    # Every object went by CopyObject: no media byte was read or written by this process.
    assert sent["CopyObject"] == len(written) and sent["PutObject"] == 0
    assert read["GetObject"] == 0
    stored = client.head_object(Bucket=BUCKET, Key="copied/240p/seg_00000.ts")
    assert (stored["ContentType"], stored["CacheControl"]) == ("video/mp2t", SEGMENT_CACHE)
    assert client.head_object(Bucket=BUCKET, Key="copied/master.m3u8")["CacheControl"] == PLAYLIST_CACHE


def test_from_another_store_everything_is_streamed_as_written(s3_server: str, tmp_path: Path) -> None:
    settings = get_settings()
    # The same server under another name is, as far as the workspace can tell, another store.
    elsewhere = settings.model_copy(
        update={
            "workspace_s3_endpoint_url": (settings.s3_endpoint_url or "").replace("127.0.0.1", "localhost")
        }
    )
    workspace = open_workspace(elsewhere)
    prefix = f"jobs/{uuid.uuid4()}/transcode/1/"
    written = workspace_tree(workspace, tmp_path, prefix)
    client = make_s3_client(settings)
    ensure_bucket(client, BUCKET)
    delivery = Delivery(client=client, bucket=BUCKET, public_base_url=None, presign_seconds=60)
    sent = counting(client)

    publish_tree(delivery, WorkspaceFolder(workspace, prefix), "streamed")

    assert sent["CopyObject"] == 0
    assert published(client, "streamed") == written


def test_from_a_folder_workspace_media_is_streamed(s3_server: str, tmp_path: Path) -> None:
    workspace = FileWorkspace(tmp_path / "work")
    prefix = f"jobs/{uuid.uuid4()}/transcode/1/"
    written = workspace_tree(workspace, tmp_path, prefix)
    client = make_s3_client(get_settings())
    ensure_bucket(client, BUCKET)
    delivery = Delivery(
        client=client, bucket=BUCKET, public_base_url="https://cdn.example", presign_seconds=60
    )
    publish_tree(delivery, WorkspaceFolder(workspace, prefix), "from-folder")
    assert published(client, "from-folder") == written


def test_a_failed_managed_upload_is_storage_failed(s3_server: str, tmp_path: Path) -> None:
    """boto3's upload_file wraps a failed PUT in S3UploadFailedError, not a ClientError: it must
    still come out as the stage error storage_failed (transient), not as a crash."""
    client = make_s3_client(get_settings())
    delivery = Delivery(
        client=client, bucket="no-such-bucket-here", public_base_url="https://cdn", presign_seconds=60
    )
    with pytest.raises(StorageFailed) as caught:
        publish_tree(delivery, LocalFolder(hls_tree(tmp_path / "hls")), "nowhere")
    assert caught.value.transient and caught.value.code == "storage_failed"
    assert "NoSuchBucket" in caught.value.message


def test_publishing_stops_when_asked(s3_server: str, tmp_path: Path) -> None:
    client = make_s3_client(get_settings())
    ensure_bucket(client, BUCKET)
    delivery = Delivery(client=client, bucket=BUCKET, public_base_url="https://cdn", presign_seconds=60)
    with pytest.raises(Canceled):
        publish_tree(delivery, LocalFolder(hls_tree(tmp_path / "hls")), "stopped", should_stop=lambda: True)
    assert "Contents" not in client.list_objects_v2(Bucket=BUCKET, Prefix="stopped/master.m3u8")


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
    published = publish_hls(delivery, LocalFolder(out), "jobs/dash", transcoded)

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
