"""Publishing HLS output to the delivery bucket, tier by tier, so a player never finds a
playlist whose segments are missing.

What is published comes from a folder: the transcode's outputs in the workspace (copied
server-side when the workspace and the delivery bucket are in one store, so no media byte
passes through the upload worker; streamed otherwise) or a folder in scratch (captions).
Playlists are small text: with signed delivery they are read, rewritten to carry signed URLs
of what they reference, and PUT.
"""

from __future__ import annotations

import concurrent.futures
import mimetypes
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from boto3.s3.transfer import TransferConfig

from services.errors import Canceled, StorageFailed
from services.storage import (
    CONTENT_TYPES,
    MULTIPART_CONCURRENCY,
    PUBLISH_CONCURRENCY,
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
    """An attempt's outputs in the workspace, under `prefix`."""

    def __init__(self, workspace: Workspace, prefix: str) -> None:
        self.workspace, self.prefix = workspace, prefix
        self.objects: dict[str, StoredObject] = {
            stored.key[len(prefix) :]: stored for stored in workspace.objects(prefix)
        }

    def files(self) -> list[str]:
        return sorted(self.objects)

    def read_text(self, relative: str) -> str:
        return self.workspace.read_bytes(self.objects[relative].key).decode()

    def send(self, relative: str, client: Any, bucket: str, key: str, extra: dict[str, str]) -> None:
        self.workspace.export(self.objects[relative], client, bucket, key, extra)


def content_type(name: str) -> str:
    suffix = PurePosixPath(name).suffix
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def publish_tiers(files: Iterable[str]) -> list[list[str]]:
    """Segments and images, then media playlists and WebVTT, then the master: a tier is sent
    only once the one before is complete, so a player that finds the master never finds a
    playlist whose segments are missing. Within a tier the order does not matter."""

    def tier(name: str) -> int:
        path = PurePosixPath(name)
        if path.name == "master.m3u8":
            return 2
        # A storyboard's WebVTT names its sprite the way a playlist names segments.
        return 1 if path.suffix in (".m3u8", ".vtt") else 0

    tiers: list[list[str]] = [[], [], []]
    for name in sorted(files):
        tiers[tier(name)].append(name)
    return [names for names in tiers if names]


def rewrite_playlist(text: str, url_for: Callable[[str], str]) -> str:
    """Replace each relative URI in a playlist by the URL url_for gives (for signed delivery,
    where a relative link would lose the signature)."""
    lines = []
    for line in text.splitlines():
        if line and not line.startswith("#") and "://" not in line:
            line = url_for(line)
        elif line.startswith("#") and 'URI="' in line:
            head, _, rest = line.partition('URI="')
            uri, _, tail = rest.partition('"')
            if "://" not in uri:
                line = f'{head}URI="{url_for(uri)}"{tail}'
        lines.append(line)
    return "\n".join(lines) + "\n"


def rewrite_vtt(text: str, url_for: Callable[[str], str]) -> str:
    """Replace each relative image URI in a storyboard's cues (``sprite.jpg#xywh=…``) by the URL
    url_for gives, keeping the fragment that names the region."""
    lines = []
    for line in text.splitlines():
        uri, hash_, fragment = line.partition("#")
        if hash_ and fragment.startswith("xywh=") and "://" not in uri:
            line = f"{url_for(uri)}#{fragment}"
        lines.append(line)
    return "\n".join(lines) + "\n"


REWRITERS: dict[str, Callable[[str, Callable[[str], str]], str]] = {
    ".m3u8": rewrite_playlist,
    ".vtt": rewrite_vtt,
}


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
    tier side by side; returns key by relative path.

    With signed delivery, playlists and storyboards are rewritten to carry signed URLs of what
    they reference. Stopped (`should_stop`, asked at least every STOP_POLL_SECONDS), it
    removes what it sent: a canceled job leaves no half stream behind.
    """
    tiers = publish_tiers(source.files())
    keys = {name: f"{prefix}/{name}" for names in tiers for name in names}
    total, done = len(keys), 0

    def send(name: str) -> None:
        rewrite = REWRITERS.get(PurePosixPath(name).suffix)
        extra = {
            "ContentType": content_type(name),
            "CacheControl": PLAYLIST_CACHE if rewrite else SEGMENT_CACHE,
        }
        if rewrite and delivery.signed:
            parent = PurePosixPath(name).parent

            def signed_url(uri: str) -> str:
                return delivery.url(f"{prefix}/{(parent / uri).as_posix()}")

            body = rewrite(source.read_text(name), signed_url).encode()
            delivery.client.put_object(Bucket=delivery.bucket, Key=keys[name], Body=body, **extra)
        else:
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


def publish_hls(
    delivery: Delivery,
    source: PublishSource,
    prefix: str,
    transcoded: dict[str, Any],
    on_progress: Callable[[float], None] | None = None,
    should_stop: StopCheck = never,
) -> dict[str, Any]:
    """Publish a transcode's output (``transcoded`` is what the transcode stage recorded): the
    playback URL, one URL per rendition playlist, the poster's and the storyboard's URLs."""
    if "master.m3u8" not in source.files():
        raise StorageFailed("The transcode's outputs are not in the workspace (cleaned away?).")
    keys = publish_tree(delivery, source, prefix, on_progress, should_stop)
    storyboard = transcoded.get("storyboard")
    poster = transcoded.get("poster")
    return {
        "bucket": delivery.bucket,
        "prefix": prefix,
        "playback_url": delivery.url(keys["master.m3u8"]),
        "segment_format": transcoded.get("segment_format", "ts"),
        "renditions": [
            {
                "name": rendition["name"],
                # An audio-only rendition has no picture: null, not a 0x0 one.
                "width": rendition["width"] or None,
                "height": rendition["height"] or None,
                "fps": rendition.get("fps") or None,
                "bandwidth": rendition["bandwidth"],
                "average_bandwidth": rendition.get("average_bandwidth"),
                "url": delivery.url(keys[f"{rendition['name']}/index.m3u8"]),
            }
            for rendition in transcoded["renditions"]
        ],
        "poster_url": delivery.url(keys[poster]) if poster else None,
        "storyboard": None
        if not storyboard
        else {
            "vtt_url": delivery.url(keys[storyboard["vtt"]]),
            "sprite_url": delivery.url(keys[storyboard["sprite"]]),
            "interval": storyboard["interval"],
            "count": storyboard["count"],
            "columns": storyboard["columns"],
            "rows": storyboard["rows"],
            "tile_width": storyboard["tile_width"],
            "tile_height": storyboard["tile_height"],
        },
    }
