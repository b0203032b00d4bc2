"""ffprobe a local file, or an object of the workspace bucket through a presigned URL, into a
typed description of what it holds, within limits."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from services.config import Settings
from services.errors import InvalidMedia, StorageFailed, TooLarge
from services.media.confine import confine

PROBE_TIMEOUT_SECONDS = 30
# A URL's read that stalls this long fails with an error of its own (below), not the timeout.
URL_STALL_MICROSECONDS = 10_000_000
# The protocols a presigned URL of each scheme needs, and nothing more: a nested open of a
# file, or of any other protocol, is refused by ffmpeg itself.
URL_PROTOCOLS = {"http": "http,tcp", "https": "https,tls,tcp"}
# How ffmpeg reports that a URL could not be read, as opposed to what it read being bad.
_UNREACHABLE = re.compile(
    r"Connection refused|Connection reset|timed out|Server returned|Network is unreachable|"
    r"Failed to resolve|No route to host"
)
# Demuxers that open further files or URLs named inside the input (playlists, manifests,
# concat lists, session descriptions) and capture devices or synthetic sources that are not
# files at all. The protocol whitelist still lets a playlist reach other *local* files, such
# as another job's source, so these are refused before their header is ever parsed.
REFUSED_DEMUXERS = frozenset(
    {
        "hls", "dash", "imf", "concat", "sdp", "rtp", "rtsp", "sap", "msnwctcp",
        "webm_dash_manifest", "lavfi", "avisynth", "vapoursynth",
        "alsa", "fbdev", "iec61883", "jack", "kmsgrab", "libcdio", "libdc1394", "openal", "oss",
        "pulse", "video4linux2", "v4l2", "x11grab",
    }
)  # fmt: skip
# How a variable frame rate shows in ffprobe: the mean rate differs from the base rate.
VFR_TOLERANCE = 0.01


# field_order values ffprobe prints for a stream coded as fields (top or bottom first).
INTERLACED_FIELD_ORDERS = frozenset({"tt", "bb", "tb", "bt"})
# Transfer characteristics of HDR video: PQ (HDR10, Dolby Vision's base) and HLG.
HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})
# Text subtitle codecs that become WebVTT renditions; bitmap ones (dvd, pgs) would need OCR.
TEXT_SUBTITLE_CODECS = frozenset({"mov_text", "subrip", "ass", "ssa", "webvtt", "text"})


@dataclass(frozen=True)
class VideoStream:
    codec: str
    width: int  # as displayed: square pixels (coded size x sample aspect ratio), after rotation
    height: int
    fps: float  # the mean rate; for a variable-rate source see ``variable_frame_rate``
    pix_fmt: str
    rotation: int  # degrees clockwise the player must turn the coded picture
    variable_frame_rate: bool = False
    index: int = 0  # the stream's index in the file (cover art may come before it)
    coded_width: int = 0  # as stored, before the sample aspect ratio and rotation
    coded_height: int = 0
    sample_aspect_ratio: str = "1:1"
    field_order: str = ""  # "progressive", "tt", "bb", … or "" when the file does not say
    color_transfer: str = ""
    color_primaries: str = ""
    color_space: str = ""
    bit_rate: int = 0  # bits/s as the stream declares it, 0 when unknown
    start_time: float = 0.0

    @property
    def hdr(self) -> bool:
        return self.color_transfer in HDR_TRANSFERS

    @property
    def declared_interlaced(self) -> bool:
        return self.field_order in INTERLACED_FIELD_ORDERS


@dataclass(frozen=True)
class AudioStream:
    codec: str
    channels: int
    sample_rate: int
    index: int = 0
    language: str = ""  # the file's tag (ISO 639-2, e.g. "eng"), "" when untagged
    title: str = ""
    default: bool = False


@dataclass(frozen=True)
class SubtitleStream:
    codec: str
    index: int
    language: str = ""
    title: str = ""
    default: bool = False
    forced: bool = False


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    duration: float
    size_bytes: int
    bit_rate: int
    video: VideoStream | None
    audio: AudioStream | None  # the main sound track: the default one, else the first
    stream_count: int
    audio_tracks: tuple[AudioStream, ...] = ()  # every sound track, in file order
    subtitles: tuple[SubtitleStream, ...] = ()  # text subtitle tracks, in file order
    start_time: float = 0.0

    @property
    def has_video(self) -> bool:
        return self.video is not None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MediaInfo:
        """The MediaInfo a stage recorded with dataclasses.asdict (the fetch stage's `media`):
        later stages read the source's facts from it instead of probing the file again."""
        video, audio = record.get("video"), record.get("audio")
        nested = ("video", "audio", "audio_tracks", "subtitles")
        return cls(
            **{key: value for key, value in record.items() if key not in nested},
            video=VideoStream(**video) if video else None,
            audio=AudioStream(**audio) if audio else None,
            audio_tracks=tuple(AudioStream(**track) for track in record.get("audio_tracks", ())),
            subtitles=tuple(SubtitleStream(**track) for track in record.get("subtitles", ())),
        )

    @property
    def demuxer(self) -> str:
        """The demuxer's primary name (``mov`` for ``mov,mp4,m4a,…``), as ffmpeg's ``-f`` takes it."""
        return self.format_name.split(",")[0]


@dataclass(frozen=True)
class ProbeLimits:
    """What a source may declare before anything decodes it (settings MAX_DURATION_SECONDS, …)."""

    max_duration_seconds: float
    max_pixels: int
    max_streams: int


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


def _aspect(value: str | None) -> Fraction:
    """The sample aspect ratio ffprobe prints as "64:45"; 1 when absent, "0:1" or nonsense."""
    num, _, den = (value or "").partition(":")
    try:
        ratio = Fraction(int(num), int(den))
    except (ValueError, ZeroDivisionError):
        return Fraction(1)
    return ratio if ratio > 0 else Fraction(1)


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value) if value not in (None, "", "N/A") else kind(0)
    except ValueError:
        return kind(0)


def _declared(stream: dict[str, Any], key: str) -> str:
    """A property ffprobe names, "" where it prints "unknown" or "unspecified" (not said)."""
    value = str(stream.get(key) or "")
    return "" if value in ("unknown", "unspecified", "reserved") else value


def _tags(stream: dict[str, Any]) -> tuple[str, str]:
    tags = {str(key).lower(): str(value) for key, value in (stream.get("tags") or {}).items()}
    language = tags.get("language", "")
    return ("" if language == "und" else language), tags.get("title", "")


def _video(stream: dict[str, Any]) -> VideoStream:
    coded_width, coded_height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    sar = _aspect(stream.get("sample_aspect_ratio"))
    # Anamorphic video (PAL 720x576 at 64:45, HDV 1440x1080 at 4:3) is shown wider than it is
    # stored: renditions are square-pixel at the shown size, so the width takes the ratio.
    width, height = round(coded_width * sar), coded_height
    rotation = _rotation(stream)
    if rotation in (90, 270):
        width, height = height, width
    mean, base = _rate(stream.get("avg_frame_rate")), _rate(stream.get("r_frame_rate"))
    return VideoStream(
        codec=str(stream.get("codec_name", "")),
        width=width,
        height=height,
        fps=round(mean or base, 3),
        pix_fmt=str(stream.get("pix_fmt", "")),
        rotation=rotation,
        variable_frame_rate=bool(mean and base and abs(mean - base) > VFR_TOLERANCE * base),
        index=int(stream.get("index") or 0),
        coded_width=coded_width,
        coded_height=coded_height,
        sample_aspect_ratio=f"{sar.numerator}:{sar.denominator}",
        field_order=_declared(stream, "field_order"),
        color_transfer=_declared(stream, "color_transfer"),
        color_primaries=_declared(stream, "color_primaries"),
        color_space=_declared(stream, "color_space"),
        bit_rate=_number(stream.get("bit_rate"), int),
        start_time=_number(stream.get("start_time"), float),
    )


def _audio(stream: dict[str, Any]) -> AudioStream:
    language, title = _tags(stream)
    return AudioStream(
        codec=str(stream.get("codec_name", "")),
        channels=int(stream.get("channels") or 0),
        sample_rate=int(stream.get("sample_rate") or 0),
        index=int(stream.get("index") or 0),
        language=language,
        title=title,
        default=bool((stream.get("disposition") or {}).get("default")),
    )


def _subtitle(stream: dict[str, Any]) -> SubtitleStream:
    language, title = _tags(stream)
    disposition = stream.get("disposition") or {}
    return SubtitleStream(
        codec=str(stream.get("codec_name", "")),
        index=int(stream.get("index") or 0),
        language=language,
        title=title,
        default=bool(disposition.get("default")),
        forced=bool(disposition.get("forced")),
    )


def _check_declared(streams: list[dict[str, Any]], limits: ProbeLimits) -> None:
    # Checked on what the headers declare, before anything else: a "frame bomb" is a tiny
    # file whose header promises a picture that would take gigabytes to decode.
    if len(streams) > limits.max_streams:
        raise TooLarge(f"The file has {len(streams)} streams; at most {limits.max_streams} are accepted.")
    for stream in streams:
        width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
        if stream.get("codec_type") == "video" and width * height > limits.max_pixels:
            raise TooLarge(
                f"The picture is {width}x{height}; at most {limits.max_pixels} pixels are accepted."
            )


def content_seconds(fmt: dict[str, Any], streams: list[dict[str, Any]]) -> float:
    """How long the file plays: from its first video or sound to the end of its last, as the
    streams say, rather than the container: MP4's duration counts from zero (a file whose
    streams start at 10 s says 10 s too much), and a container may simply be wrong. Streams
    without a duration (Matroska's) leave the container's word."""
    declared = float(fmt.get("duration") or 0.0)
    spans: list[tuple[float, float]] = [
        (_number(stream.get("start_time"), float), _number(stream.get("duration"), float))
        for stream in streams
        if stream.get("codec_type") in ("video", "audio")
        and not (stream.get("disposition") or {}).get("attached_pic")
        and _number(stream.get("duration"), float) > 0
    ]
    if not spans:
        return declared
    first = min(start for start, _ in spans)
    last = max(start + length for start, length in spans)
    return last - first


def parse_probe(data: dict[str, Any], limits: ProbeLimits | None = None) -> MediaInfo:
    """Turn ffprobe's JSON into MediaInfo; pure, so it is tested on canned JSON."""
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    if limits is not None:
        _check_declared(streams, limits)
    video = None
    audio_tracks: list[AudioStream] = []
    subtitles: list[SubtitleStream] = []
    for position, declared in enumerate(streams):
        stream = {"index": position} | declared
        kind = stream.get("codec_type")
        disposition = stream.get("disposition") or {}
        # The main video is the first that is not a cover picture, wherever that picture sits.
        if kind == "video" and video is None and not disposition.get("attached_pic"):
            video = _video(stream)
        elif kind == "audio":
            audio_tracks.append(_audio(stream))
        elif kind == "subtitle" and stream.get("codec_name") in TEXT_SUBTITLE_CODECS:
            subtitles.append(_subtitle(stream))
    audio = next(
        (track for track in audio_tracks if track.default), audio_tracks[0] if audio_tracks else None
    )
    duration = content_seconds(fmt, streams)
    format_name = str(fmt.get("format_name", ""))
    if set(format_name.split(",")) & REFUSED_DEMUXERS:
        raise InvalidMedia("Playlists and lists of other files are not accepted; upload the video itself.")
    if video is None and audio is None:
        raise InvalidMedia("The file holds no video or audio stream.")
    if video is not None and (video.width <= 0 or video.height <= 0):
        raise InvalidMedia("The video stream has no picture size.")
    if duration <= 0:
        raise InvalidMedia("The file has no duration; it may be truncated.")
    if limits is not None and duration > limits.max_duration_seconds:
        raise TooLarge(
            f"The file lasts {duration:.0f} s; at most {limits.max_duration_seconds:.0f} s are accepted."
        )
    return MediaInfo(
        format_name=format_name,
        duration=duration,
        size_bytes=int(fmt.get("size") or 0),
        bit_rate=int(fmt.get("bit_rate") or 0),
        video=video,
        audio=audio,
        stream_count=len(streams),
        audio_tracks=tuple(audio_tracks),
        subtitles=tuple(subtitles),
        start_time=_number(fmt.get("start_time"), float),
    )


def accepted_demuxers(listing: str) -> list[str]:
    """The names in ``ffprobe -demuxers`` output minus the refused ones, for ``-format_whitelist``.

    ffprobe has no demuxer blacklist, only a whitelist, and the check happens after the format
    is recognised but before its header is read: exactly when a playlist must be stopped.
    """
    names: list[str] = []
    _, _, table = listing.partition(" --\n")  # the legend ends at this rule
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 2 or "D" not in fields[0]:
            continue
        aliases = fields[1].split(",")
        if not set(aliases) & REFUSED_DEMUXERS:
            names += aliases
    return names


@lru_cache(maxsize=1)
def _format_whitelist() -> str:
    done = subprocess.run(
        ["ffprobe", "-hide_banner", "-demuxers"],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_SECONDS,
        check=True,
    )
    return ",".join(accepted_demuxers(done.stdout))


def _refusal(stderr: str) -> str:
    refused = re.search(r"\[(\w+) @ [^\]]*\] Format not on whitelist", stderr)
    if refused:
        return f"Files of type {refused.group(1)!r} (playlists, lists of other files) are not accepted."
    reason = stderr.strip().splitlines()[-1] if stderr.strip() else "unreadable"
    return f"The file is not a readable video or audio file ({reason})."


def input_protocols(source: Path | str) -> list[str]:
    """The protocol options for reading `source`: a local file, or a presigned http(s) URL."""
    if isinstance(source, Path):
        return ["-protocol_whitelist", "file"]
    scheme = source.partition("://")[0]
    if scheme not in URL_PROTOCOLS:
        raise ValueError(f"ffprobe reads files and http(s) URLs, not {scheme!r}")
    return ["-protocol_whitelist", URL_PROTOCOLS[scheme], "-rw_timeout", str(URL_STALL_MICROSECONDS)]


def probe_failure(stderr: str, *, remote: bool) -> InvalidMedia | StorageFailed:
    """What a failed ffprobe means: the store not answering is transient (another attempt may
    well read it), anything else is the file's."""
    if remote and _UNREACHABLE.search(stderr):
        last = stderr.strip().splitlines()[-1]
        return StorageFailed(f"Reading the source from the workspace failed ({last}).")
    return InvalidMedia(_refusal(stderr))


def probe(
    source: Path | str, limits: ProbeLimits | None = None, *, memory_limit_bytes: int | None = None
) -> MediaInfo:
    """Probe a local file or a presigned URL (read in place, with ranged GETs: only what
    ffprobe needs crosses the network); anything ffprobe cannot read is `invalid_media`,
    anything over ``limits`` is `too_large`, a store that does not answer is `storage_failed`.
    A playlist-like file is refused without opening what it names."""
    if isinstance(source, Path) and (not source.exists() or source.stat().st_size == 0):
        raise InvalidMedia("The file is empty.")
    args = [
        "ffprobe", "-v", "error", *input_protocols(source),
        "-format_whitelist", _format_whitelist(),
        "-print_format", "json", "-show_format", "-show_streams",
        str(source),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
            preexec_fn=confine(memory_limit_bytes),
        )
    except subprocess.TimeoutExpired as exc:
        raise InvalidMedia("Probing the file took too long.") from exc
    if done.returncode != 0:
        if isinstance(source, Path):
            raise probe_failure(done.stderr, remote=False)
        # A presigned URL is a credential while it lasts: it never goes into an error message.
        raise probe_failure(done.stderr.replace(source, "the source"), remote=True)
    return parse_probe(json.loads(done.stdout or "{}"), limits)


def probe_limits(settings: Settings) -> ProbeLimits:
    return ProbeLimits(settings.max_duration_seconds, settings.max_pixels, settings.max_streams)
