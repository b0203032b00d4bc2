"""Playback links that never expire: every published file of a job is reached through the API
under a token of its own, and the API serves playlists with freshly signed URLs inside.

The token is an HMAC of the job's id and playback revision under a key derived from
CONVEYOR_SECRET_KEY: players (hls.js, Safari) cannot send a Bearer header, so the URL carries
its own authorization. It has no expiry; raising the job's revision revokes every link given
out before. A job's stored result names its published files by path, relative to the job's
published folder; `PlaybackLinks.present` turns those into links."""

from __future__ import annotations

import base64
import hashlib
import hmac
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from models import Job
from services.config import Settings
from services.derived_keys import derived_key

PLAYBACK_PATH = "/api/v1/playback"
TOKEN_CHARS = 32


def playback_token(key: bytes, job_id: uuid.UUID, revision: int) -> str:
    digest = hmac.new(key, f"{job_id}:{revision}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:TOKEN_CHARS]


def is_published_path(path: str) -> bool:
    """A path inside a job's published folder: relative, without . or .. steps."""
    parts = path.split("/")
    return bool(path) and "\\" not in path and all(part not in ("", ".", "..") for part in parts)


def resolve(playlist_path: str, uri: str) -> str:
    """A URI found in the playlist at playlist_path, as a path in the same published folder."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(playlist_path), uri))


@dataclass(frozen=True)
class PlaybackLinks:
    base_url: str
    key: bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> PlaybackLinks:
        return cls(settings.api_public_url.rstrip("/"), derived_key(settings.secret_key, "playback"))

    def token(self, job: Job) -> str:
        return playback_token(self.key, job.id, job.playback_revision)

    def accepts(self, job: Job, token: str) -> bool:
        return hmac.compare_digest(self.token(job), token)

    def url(self, job: Job, path: str) -> str:
        return f"{self.base_url}{PLAYBACK_PATH}/{job.id}/{self.token(job)}/{quote(path)}"

    def present(self, job: Job) -> dict[str, Any] | None:
        """The job's result as clients see it: each published path a playback link. A result
        written before links existed (absolute URLs) passes through as it is."""
        if job.result is None:
            return None

        def link(value: Any) -> Any:
            return self.url(job, value) if isinstance(value, str) and "://" not in value else value

        result = {key: value for key, value in job.result.items() if key != "published"}
        result["playback_url"] = link(result.get("playback_url"))
        result["dash_url"] = link(result.get("dash_url"))
        result["poster_url"] = link(result.get("poster_url"))
        for tracks in ("renditions", "audio"):
            result[tracks] = [track | {"url": link(track.get("url"))} for track in result.get(tracks, [])]
        result["subtitles"] = [
            track | {"url": link(track.get("url")), "playlist_url": link(track.get("playlist_url"))}
            for track in result.get("subtitles", [])
        ]
        storyboard = result.get("storyboard")
        if storyboard:
            result["storyboard"] = storyboard | {
                "vtt_url": link(storyboard.get("vtt_url")),
                "sprite_url": link(storyboard.get("sprite_url")),
            }
        result["captions"] = [
            caption | {"url": link(caption.get("url")), "playlist_url": link(caption.get("playlist_url"))}
            for caption in result.get("captions", [])
        ]
        return result
