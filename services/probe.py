"""ffprobe a local file into a typed description of what it holds."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from services.errors import InvalidMedia

PROBE_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class VideoStream:
    codec: str
    width: int  # as displayed, after rotation
    height: int
    fps: float
    pix_fmt: str
    rotation: int  # degrees clockwise the player must turn the coded picture


@dataclass(frozen=True)
class AudioStream:
    codec: str
    channels: int
    sample_rate: int


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    duration: float
    size_bytes: int
    bit_rate: int
    video: VideoStream | None
    audio: AudioStream | None
    stream_count: int

    @property
    def has_video(self) -> bool:
        return self.video is not None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


def _rate(value: str | None) -> float:
    if not value or value in ("0/0", "0"):
        return 0.0
    try:
        return float(Fraction(value))
    except (ValueError, ZeroDivisionError):
        return 0.0


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(-float(side["rotation"])) % 360
    tag = stream.get("tags", {}).get("rotate")
    return int(tag) % 360 if tag else 0


def parse_probe(data: dict[str, Any]) -> MediaInfo:
    """Turn ffprobe's JSON into MediaInfo; pure, so it is tested on canned JSON."""
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    video = audio = None
    for stream in streams:
        kind = stream.get("codec_type")
        disposition = stream.get("disposition") or {}
        if kind == "video" and video is None and not disposition.get("attached_pic"):
            width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
            rotation = _rotation(stream)
            if rotation in (90, 270):
                width, height = height, width
            fps = _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate"))
            video = VideoStream(
                codec=str(stream.get("codec_name", "")),
                width=width,
                height=height,
                fps=round(fps, 3),
                pix_fmt=str(stream.get("pix_fmt", "")),
                rotation=rotation,
            )
        elif kind == "audio" and audio is None:
            audio = AudioStream(
                codec=str(stream.get("codec_name", "")),
                channels=int(stream.get("channels") or 0),
                sample_rate=int(stream.get("sample_rate") or 0),
            )
    duration = float(fmt.get("duration") or 0.0)
    if video is None and audio is None:
        raise InvalidMedia("The file holds no video or audio stream.")
    if video is not None and (video.width <= 0 or video.height <= 0):
        raise InvalidMedia("The video stream has no picture size.")
    if duration <= 0:
        raise InvalidMedia("The file has no duration; it may be truncated.")
    return MediaInfo(
        format_name=str(fmt.get("format_name", "")),
        duration=duration,
        size_bytes=int(fmt.get("size") or 0),
        bit_rate=int(fmt.get("bit_rate") or 0),
        video=video,
        audio=audio,
        stream_count=len(streams),
    )


def probe(path: Path) -> MediaInfo:
    """Probe a local file; anything ffprobe cannot read is `invalid_media`."""
    if not path.exists() or path.stat().st_size == 0:
        raise InvalidMedia("The file is empty.")
    args = [
        "ffprobe", "-v", "error", "-protocol_whitelist", "file",
        "-print_format", "json", "-show_format", "-show_streams",
        str(path),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise InvalidMedia("Probing the file took too long.") from exc
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "unreadable"
        raise InvalidMedia(f"The file is not a readable video or audio file ({reason}).")
    return parse_probe(json.loads(done.stdout or "{}"))
