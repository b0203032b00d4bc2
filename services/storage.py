"""S3 clients, the delivery bucket, and the URLs players use to reach what is published: the
API serves stored playlists, storyboards and DASH manifests with every URI inside rewritten
(services/playback.py)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

import boto3
from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.config import Settings
from services.errors import StorageFailed

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
# Objects of one publish tier sent side by side: a PUT is mostly waiting on the network, and a
# long video has thousands of segments. Each large file's multipart upload adds its own threads.
PUBLISH_CONCURRENCY = 8
MULTIPART_CONCURRENCY = 4
# What boto3 raises when S3 fails: its managed transfers (upload_file, copy) wrap a failed
# request in S3UploadFailedError or S3TransferFailedError rather than a ClientError.
STORAGE_ERRORS = (BotoCoreError, ClientError, S3UploadFailedError, S3TransferFailedError)
MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
CREATED_BY_ANOTHER = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


def make_delivery(settings: Settings) -> Delivery:
    return Delivery(
        client=make_s3_client(settings),
        bucket=settings.s3_bucket,
        public_base_url=settings.s3_public_base_url,
        presign_seconds=settings.s3_presign_seconds,
        multipart_threshold=settings.s3_multipart_threshold_bytes,
    )


def make_s3_client(
    settings: Settings,
    *,
    timeout: float = 60.0,
    attempts: int = 5,
    endpoint_url: str | None = None,
    body_checks: bool = True,
) -> Any:
    """A client of S3_ENDPOINT_URL (or of `endpoint_url`). Without `body_checks` it neither adds
    a CRC32 to uploads nor puts the body's SHA-256 in their signature: over plain HTTP botocore
    would hash every byte sent (0.7 s of CPU per GB), where over HTTPS it already does not."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path", **({} if body_checks else {"payload_signing_enabled": False})},
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=min(timeout, 5.0),
            read_timeout=timeout,
            # Enough connections for every file and multipart thread publish_tree runs at once.
            max_pool_connections=PUBLISH_CONCURRENCY * MULTIPART_CONCURRENCY,
            request_checksum_calculation="when_supported" if body_checks else "when_required",
        ),
    )


def ensure_bucket(client: Any, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise StorageFailed(f"The bucket {bucket!r} cannot be reached: {exc}") from exc
        try:
            client.create_bucket(Bucket=bucket)
        except ClientError as race:
            # Another process (a second worker, the server's own start-up) made it meanwhile.
            if race.response.get("Error", {}).get("Code") not in CREATED_BY_ANOTHER:
                raise StorageFailed(f"The bucket {bucket!r} cannot be created: {race}") from race
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
    (services/media/dash.py lists them one by one) by the URL url_for gives, escaped for XML."""

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
