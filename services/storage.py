"""Publishing HLS output to the delivery bucket, and the URLs players use to reach it."""

from __future__ import annotations

import html
import mimetypes
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.config import Settings
from services.errors import Canceled, StorageFailed

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".vtt": "text/vtt",
    ".mpd": "application/dash+xml",
    ".jpg": "image/jpeg",
    ".json": "application/json",
}
# Playlists change on every re-run of a job; segments never change once written.
PLAYLIST_CACHE = "public, max-age=60"
SEGMENT_CACHE = "public, max-age=31536000, immutable"
# Objects of one publish tier sent side by side: a PUT is mostly waiting on the network, and a
# long video has thousands of segments. Each large file's multipart upload adds its own threads.
PUBLISH_CONCURRENCY = 8
MULTIPART_CONCURRENCY = 4


def make_delivery(settings: Settings) -> Delivery:
    return Delivery(
        client=make_s3_client(settings),
        bucket=settings.s3_bucket,
        public_base_url=settings.s3_public_base_url,
        presign_seconds=settings.s3_presign_seconds,
        multipart_threshold=settings.s3_multipart_threshold_bytes,
    )


def make_s3_client(settings: Settings, *, timeout: float = 60.0, attempts: int = 5) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=min(timeout, 5.0),
            read_timeout=timeout,
            # Enough connections for every file and multipart thread publish_tree runs at once.
            max_pool_connections=PUBLISH_CONCURRENCY * MULTIPART_CONCURRENCY,
        ),
    )


def ensure_bucket(client: Any, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise StorageFailed(f"The delivery bucket {bucket!r} cannot be reached: {exc}") from exc
        client.create_bucket(Bucket=bucket)
    except BotoCoreError as exc:
        raise StorageFailed(f"The S3 server cannot be reached: {exc}") from exc


def allow_browser_playback(client: Any, bucket: str, origins: list[str]) -> bool:
    """Let web players on `origins` fetch playlists and segments (hls.js reads them with XHR
    from the bucket's origin, not the page's). False when the server refuses: playback from
    other origins then needs the bucket configured by hand, which is not worth failing for."""
    if not origins:
        return False
    rule = {
        "AllowedOrigins": origins,
        "AllowedMethods": ["GET", "HEAD"],
        "AllowedHeaders": ["*"],
        "MaxAgeSeconds": 3600,
    }
    try:
        client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})
    except (BotoCoreError, ClientError):
        return False
    return True


def configure_delivery_bucket(client: Any, bucket: str, origins: list[str]) -> bool:
    """Set-up of the delivery bucket (`flask --app api setup-bucket`, the embedded S3 server):
    create it if missing, set its CORS. Whether CORS was set."""
    ensure_bucket(client, bucket)
    return allow_browser_playback(client, bucket, origins)


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def publish_tiers(files: Iterable[Path]) -> list[list[Path]]:
    """Segments and images, then media playlists and WebVTT, then the master: a tier is sent
    only once the one before is complete, so a player that finds the master never finds a
    playlist whose segments are missing. Within a tier the order does not matter."""

    def tier(path: Path) -> int:
        if path.name == "master.m3u8" or path.suffix == ".mpd":
            return 2
        # A storyboard's WebVTT names its sprite the way a playlist names segments.
        return 1 if path.suffix in (".m3u8", ".vtt") else 0

    tiers: list[list[Path]] = [[], [], []]
    for path in sorted(files):
        tiers[tier(path)].append(path)
    return [paths for paths in tiers if paths]


def rewrite_playlist(text: str, url_for: Callable[[str], str]) -> str:
    """Replace each relative URI in a playlist by the URL url_for gives (the API serving a
    stored playlist: a relative link to a private bucket would lose the signature)."""
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


_MPD_URL = re.compile(r'(sourceURL|media)="([^"]*)"')
_MPD_BASE_URL = re.compile(r"<BaseURL>([^<]*)</BaseURL>")


def rewrite_mpd(text: str, url_for: Callable[[str], str]) -> str:
    """Replace each relative init, segment and subtitle file URL of a DASH manifest
    (services/dash.py lists them one by one) by the URL url_for gives, escaped for XML."""

    def signed(match: re.Match[str]) -> str:
        uri = html.unescape(match[2])
        return match[0] if "://" in uri else f"{match[1]}={quoteattr(url_for(uri))}"

    def signed_base(match: re.Match[str]) -> str:
        uri = html.unescape(match[1])
        return match[0] if "://" in uri else f"<BaseURL>{escape(url_for(uri))}</BaseURL>"

    return _MPD_BASE_URL.sub(signed_base, _MPD_URL.sub(signed, text))


REWRITERS: dict[str, Callable[[str, Callable[[str], str]], str]] = {
    ".m3u8": rewrite_playlist,
    ".vtt": rewrite_vtt,
    ".mpd": rewrite_mpd,
}


@dataclass(frozen=True)
class Delivery:
    """Where published objects are and how a player reaches them."""

    client: Any
    bucket: str
    public_base_url: str | None
    presign_seconds: int
    multipart_threshold: int = 8 * 1024 * 1024

    def url(self, key: str) -> str:
        if self.public_base_url is not None:
            return f"{self.public_base_url.rstrip('/')}/{quote(key)}"
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.presign_seconds
        )
        return url


def publish_tree(
    delivery: Delivery,
    local_dir: Path,
    prefix: str,
    on_progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, str]:
    """Upload every file under local_dir to prefix/…, tier by tier (publish_tiers), the files of
    a tier side by side; returns key by relative path. Stopped (`should_stop`, asked after each
    file), it removes what it sent: a canceled job leaves no half stream behind."""
    config = TransferConfig(
        multipart_threshold=delivery.multipart_threshold, max_concurrency=MULTIPART_CONCURRENCY
    )
    tiers = publish_tiers(p for p in local_dir.rglob("*") if p.is_file())
    keys = {
        str(path.relative_to(local_dir)): f"{prefix}/{path.relative_to(local_dir).as_posix()}"
        for paths in tiers
        for path in paths
    }
    total = len(keys)

    def send(path: Path) -> None:
        relative = str(path.relative_to(local_dir))
        # Playlists and storyboards are stored as written, with relative URIs: the API serves
        # them with freshly signed URLs inside (services/playback.py), so no link expires.
        extra = {
            "ContentType": content_type(path),
            "CacheControl": PLAYLIST_CACHE if path.suffix in REWRITERS else SEGMENT_CACHE,
        }
        delivery.client.upload_file(
            str(path), delivery.bucket, keys[relative], ExtraArgs=extra, Config=config
        )

    done = 0
    with ThreadPoolExecutor(PUBLISH_CONCURRENCY, thread_name_prefix="publish") as pool:
        for paths in tiers:
            futures = [pool.submit(send, path) for path in paths]
            try:
                for future in as_completed(futures):
                    future.result()
                    done += 1
                    if on_progress is not None:
                        on_progress(100.0 * done / total)
                    if should_stop():
                        raise Canceled("Publishing was stopped.")
            except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
                for future in futures:
                    future.cancel()
                raise StorageFailed(f"Publishing to the delivery bucket failed: {exc}") from exc
            except Canceled:
                for future in futures:
                    future.cancel()
                pool.shutdown(wait=True)
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
    hls_dir: Path,
    prefix: str,
    transcoded: dict[str, Any],
    on_progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Publish a transcode's output (``transcoded`` is what the transcode stage recorded): the
    master playlist (and the DASH manifest), each video, audio and subtitle rendition's
    playlist, the poster and the storyboard, each named by its path under `prefix`
    (services/playback.py makes links of them)."""
    publish_tree(delivery, hls_dir, prefix, on_progress, should_stop)
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
