"""Publishing HLS output to the delivery bucket, tier by tier, so a player never finds a
playlist whose segments are missing.

What is published comes from a folder: the transcode's outputs in the workspace (copied
server-side when the workspace and the delivery bucket are in one store, so no media byte
passes through the upload worker; streamed otherwise) or a folder in scratch (captions).
Playlists, storyboards and DASH manifests are stored as written, with relative URIs: the API
serves them with freshly signed URLs inside (services/playback.py), so no link expires.
"""

from __future__ import annotations

import concurrent.futures
import mimetypes
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from boto3.s3.transfer import TransferConfig

from services.errors import Canceled, StorageFailed
from services.storage import (
    CONTENT_TYPES,
    MULTIPART_CONCURRENCY,
    PUBLISH_CONCURRENCY,
    REWRITERS,
    STORAGE_ERRORS,
    Delivery,
)
from services.workspace import StopCheck, StoredObject, Workspace, never
from services.workspace.streams import STOP_POLL_SECONDS

# Playlists change on every re-run of a job; segments never change once written.
PLAYLIST_CACHE = "public, max-age=60"
SEGMENT_CACHE = "public, max-age=31536000, immutable"


class PublishSource(Protocol):
    """A folder of files to publish, named by their paths relative to it ("240p/seg_00001.ts")."""

    def files(self) -> list[str]: ...

    def read_text(self, relative: str) -> str: ...

    def send(self, relative: str, client: Any, bucket: str, key: str, extra: dict[str, str]) -> None: ...


class LocalFolder:
    """Files in this process's scratch."""

    def __init__(self, root: Path, multipart_threshold: int = 8 * 1024 * 1024) -> None:
        self.root = root
        self.config = TransferConfig(
            multipart_threshold=multipart_threshold, max_concurrency=MULTIPART_CONCURRENCY
        )

    def files(self) -> list[str]:
        return sorted(
            path.relative_to(self.root).as_posix() for path in self.root.rglob("*") if path.is_file()
        )

    def read_text(self, relative: str) -> str:
        return (self.root / relative).read_text()

    def send(self, relative: str, client: Any, bucket: str, key: str, extra: dict[str, str]) -> None:
        client.upload_file(str(self.root / relative), bucket, key, ExtraArgs=extra, Config=self.config)


class WorkspaceFolder:
    """An attempt's outputs in the workspace, under `prefix`, seen through the folders of
    `under` where `prefix` holds no file of that name (a stitched transcode: the stitch's
    playlists over its parts' segments)."""

    def __init__(self, workspace: Workspace, prefix: str, under: Sequence[str] = ()) -> None:
        self.workspace, self.prefix = workspace, prefix
        self.objects: dict[str, StoredObject] = {}
        for folder in (prefix, *under):
            for stored in workspace.objects(folder):
                self.objects.setdefault(stored.key[len(folder) :], stored)

    def files(self) -> list[str]:
        return sorted(self.objects)

    def read_text(self, relative: str) -> str:
        return self.workspace.read_bytes(self.objects[relative].key).decode()

    def send(self, relative: str, client: Any, bucket: str, key: str, extra: dict[str, str]) -> None:
        self.workspace.export(self.objects[relative], client, bucket, key, extra)


def transcoded_folder(workspace: Workspace, transcoded: dict[str, Any]) -> WorkspaceFolder:
    """What the transcode stage recorded, as one folder: its attempt's prefix, over the parts'
    folders when it stitched parts."""
    return WorkspaceFolder(workspace, transcoded["prefix"], transcoded.get("parts", ()))


def content_type(name: str) -> str:
    suffix = PurePosixPath(name).suffix
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def publish_tiers(files: Iterable[str]) -> list[list[str]]:
    """Segments and images, then media playlists and WebVTT, then the master (and the DASH
    manifest): a tier is sent only once the one before is complete, so a player that finds the
    master never finds a playlist whose segments are missing. Within a tier the order does not
    matter."""

    def tier(name: str) -> int:
        path = PurePosixPath(name)
        if path.name == "master.m3u8" or path.suffix == ".mpd":
            return 2
        # A storyboard's WebVTT names its sprite the way a playlist names segments.
        return 1 if path.suffix in (".m3u8", ".vtt") else 0

    tiers: list[list[str]] = [[], [], []]
    for name in sorted(files):
        tiers[tier(name)].append(name)
    return [names for names in tiers if names]


def _wait_for_tier(futures: list[Future[None]], should_stop: StopCheck, sent: Callable[[], None]) -> None:
    pending = set(futures)
    try:
        while pending:
            if should_stop():
                raise Canceled("Publishing was stopped.")
            done, pending = concurrent.futures.wait(
                pending, timeout=STOP_POLL_SECONDS, return_when="FIRST_COMPLETED"
            )
            for future in done:
                future.result()
                sent()
    except (*STORAGE_ERRORS, StorageFailed) as exc:
        raise StorageFailed(f"Publishing to the delivery bucket failed: {exc}") from exc
    finally:
        for future in pending:
            future.cancel()


def publish_tree(
    delivery: Delivery,
    source: PublishSource,
    prefix: str,
    on_progress: Callable[[float], None] | None = None,
    should_stop: StopCheck = never,
) -> dict[str, str]:
    """Publish every file of `source` to prefix/…, tier by tier (publish_tiers), the files of a
    tier side by side; returns key by relative path. Stopped (`should_stop`, asked at least
    every STOP_POLL_SECONDS), it removes what it sent: a canceled job leaves no half stream
    behind."""
    tiers = publish_tiers(source.files())
    keys = {name: f"{prefix}/{name}" for names in tiers for name in names}
    total, done = len(keys), 0

    def send(name: str) -> None:
        extra = {
            "ContentType": content_type(name),
            # Playlists change on a job's re-run; segments never change once written.
            "CacheControl": PLAYLIST_CACHE if PurePosixPath(name).suffix in REWRITERS else SEGMENT_CACHE,
        }
        source.send(name, delivery.client, delivery.bucket, keys[name], extra)

    def sent() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(100.0 * done / total)

    try:
        with ThreadPoolExecutor(PUBLISH_CONCURRENCY, thread_name_prefix="publish") as pool:
            for names in tiers:
                _wait_for_tier([pool.submit(send, name) for name in names], should_stop, sent)
    except Canceled:
        remove_published(delivery, list(keys.values()))
        raise
    return keys


def remove_published(delivery: Delivery, keys: list[str]) -> None:
    """Delete these keys from the delivery bucket (absent ones are no error), a thousand a call."""
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        delivery.client.delete_objects(Bucket=delivery.bucket, Delete={"Objects": batch, "Quiet": True})


def _video_rendition(rendition: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": rendition["name"],
        "codec": rendition.get("codec", "h264"),
        "width": rendition["width"] or None,
        "height": rendition["height"] or None,
        "fps": rendition.get("fps") or None,
        "bandwidth": rendition["bandwidth"],
        "average_bandwidth": rendition.get("average_bandwidth"),
        "url": f"{rendition['name']}/index.m3u8",
        "quality": rendition.get("quality"),
    }


def publish_hls(
    delivery: Delivery,
    source: PublishSource,
    prefix: str,
    transcoded: dict[str, Any],
    on_progress: Callable[[float], None] | None = None,
    should_stop: StopCheck = never,
) -> dict[str, Any]:
    """Publish a transcode's output (``transcoded`` is what the transcode stage recorded): the
    master playlist (and the DASH manifest), each video, audio and subtitle rendition's
    playlist, the poster and the storyboard, each named by its path under `prefix`
    (services/playback.py makes links of them)."""
    if "master.m3u8" not in source.files():
        raise StorageFailed("The transcode's outputs are not in the workspace (cleaned away?).")
    publish_tree(delivery, source, prefix, on_progress, should_stop)
    storyboard = transcoded.get("storyboard")
    poster = transcoded.get("poster")
    dash = transcoded.get("dash")
    return {
        "bucket": delivery.bucket,
        "prefix": prefix,
        "playback_url": "master.m3u8",
        "dash_url": dash or None,
        "segment_format": transcoded.get("segment_format", "ts"),
        "renditions": [_video_rendition(r) for r in transcoded["renditions"]],
        "audio": [
            {
                "name": track["name"],
                "language": track["language"] or None,
                "title": track["title"],
                "default": track["default"],
                "bandwidth": track["bandwidth"],
                "url": f"{track['name']}/index.m3u8",
            }
            for track in transcoded.get("audio", [])
        ],
        "subtitles": [
            {
                "name": track["name"],
                "language": track["language"] or None,
                "title": track["title"],
                "default": track["default"],
                "forced": track["forced"],
                "url": track["vtt"],
                "playlist_url": track["playlist"],
            }
            for track in transcoded.get("subtitles", [])
        ],
        "poster_url": poster or None,
        "storyboard": None
        if not storyboard
        else {
            "vtt_url": storyboard["vtt"],
            "sprite_url": storyboard["sprite"],
            "interval": storyboard["interval"],
            "count": storyboard["count"],
            "columns": storyboard["columns"],
            "rows": storyboard["rows"],
            "tile_width": storyboard["tile_width"],
            "tile_height": storyboard["tile_height"],
        },
    }
