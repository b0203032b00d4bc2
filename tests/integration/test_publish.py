"""Publishing to the real S3 server: files of a tier go up side by side, tiers one after the
other, so the master playlist is never readable before what it lists; from the workspace, by
server-side copy when it is in the delivery's store, by streaming otherwise."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from services.config import get_settings
from services.errors import Canceled, StorageFailed
from services.publishing import (
    PLAYLIST_CACHE,
    SEGMENT_CACHE,
    LocalFolder,
    WorkspaceFolder,
    publish_tiers,
    publish_tree,
)
from services.storage import Delivery, ensure_bucket, make_s3_client
from services.workspace import FileWorkspace, S3Workspace, Workspace, open_workspace

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
    # Signed delivery: the stored media playlist links each segment by a signed URL.
    stored = client.get_object(Bucket=BUCKET, Key="jobs/one/360p/index.m3u8")
    assert stored["ContentType"] == "application/vnd.apple.mpegurl"
    lines = stored["Body"].read().decode().splitlines()
    assert next(line for line in lines if "seg_00000.ts" in line).startswith("http")


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


def test_from_another_store_media_is_streamed_and_playlists_are_signed(
    s3_server: str, tmp_path: Path
) -> None:
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

    copies = published(client, "streamed")
    assert sent["CopyObject"] == 0
    media = [name for name in written if not name.endswith((".m3u8", ".vtt"))]
    assert {name: copies[name] for name in media} == {name: written[name] for name in media}
    playlist = copies["360p/index.m3u8"].decode().splitlines()
    assert next(line for line in playlist if "seg_00000.ts" in line).startswith("http")


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
