"""Decide which HLS renditions a source gets: pure, from a probe result and the requested names."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.errors import InvalidMedia
from services.probe import MediaInfo, VideoStream

# Renditions below this short side are phone-sized; players expect at most 30 fps there.
HIGH_FPS_MIN_SHORT_SIDE = 720
HIGH_FPS_CAP = 60.0
LOW_FPS_CAP = 30.0
# ffprobe reports 0 when a container has no usable frame rate (some WebM, VFR captures).
DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class Rendition:
    name: str  # "240p" … "1080p", or "<short side>p" for a source smaller than the ladder
    width: int  # even: yuv420p subsamples chroma by two in both directions
    height: int
    fps: float
    video_bitrate: int  # bits/s, x264 -b:v
    maxrate: int  # bits/s, x264 -maxrate
    bufsize: int  # bits, x264 -bufsize
    audio_bitrate: int  # bits/s

    @property
    def audio_only(self) -> bool:
        return self.width == 0

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    @property
    def bandwidth(self) -> int:
        """Declared peak for the master playlist's BANDWIDTH: the VBV ceiling plus audio."""
        return self.maxrate + self.audio_bitrate


def _rung(short_side: int, video_kbps: int, audio_kbps: int) -> Rendition:
    # maxrate 1.07x and a 1.5x buffer keep segment sizes close to the declared peak, so a
    # player's bandwidth estimate holds, while leaving x264 room for hard scenes.
    return Rendition(
        name=f"{short_side}p",
        width=short_side,  # placeholders: plan_ladder fits both sides to the source
        height=short_side,
        fps=DEFAULT_FPS,
        video_bitrate=video_kbps * 1000,
        maxrate=video_kbps * 1070,
        bufsize=video_kbps * 1500,
        audio_bitrate=audio_kbps * 1000,
    )


LADDER: tuple[Rendition, ...] = (
    _rung(240, 400, 64),
    _rung(360, 800, 96),
    _rung(480, 1400, 96),
    _rung(720, 2800, 128),
    _rung(1080, 5000, 128),
)
RUNG_NAMES: frozenset[str] = frozenset(r.name for r in LADDER)
# A podcast or music upload: one AAC rendition, at the top rung's audio rate since audio is
# all the listener gets.
AUDIO_ONLY = Rendition(
    name="audio", width=0, height=0, fps=0.0, video_bitrate=0, maxrate=0, bufsize=0, audio_bitrate=128_000
)


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def _rendition_fps(source_fps: float, short_side: int) -> float:
    source = source_fps if source_fps > 0 else DEFAULT_FPS
    cap = HIGH_FPS_CAP if short_side >= HIGH_FPS_MIN_SHORT_SIDE else LOW_FPS_CAP
    # Divide by a whole number rather than clamping, so 59.94 becomes 29.97 and 50 becomes 25:
    # every output frame is then a source frame at an even cadence, with no judder.
    divisor = max(1, math.ceil(source / cap - 1e-9))
    return round(source / divisor, 3)


def _source_fps(video: VideoStream) -> float:
    # A variable-rate source (phones, screen recordings) gets constant-rate renditions, which
    # fixed GOPs and FRAME-RATE need, at its mean rate to the nearest whole frame: the mean
    # never exceeds the rate the source reaches, and whole rates divide cleanly below.
    if video.variable_frame_rate and video.fps > 0:
        return float(max(1, round(video.fps)))
    return video.fps


def _fit(rung: Rendition, short_side: int, src_width: int, src_height: int, source_fps: float) -> Rendition:
    src_short, src_long = min(src_width, src_height), max(src_width, src_height)
    long_side = _even(src_long * short_side / src_short)
    width, height = (long_side, short_side) if src_width >= src_height else (short_side, long_side)
    return replace(
        rung,
        name=f"{short_side}p",
        width=width,
        height=height,
        fps=_rendition_fps(source_fps, short_side),
    )


def plan_ladder(info: MediaInfo, requested: Sequence[str] | None = None) -> list[Rendition]:
    """Renditions for ``info``, lowest first: never above the source, aspect ratio kept.

    ``requested`` narrows the standard rungs by name; names are validated by the API, so an
    unknown one here is a programming error (``ValueError``), not bad media. A source with
    audio and no video gets the one audio-only rendition whatever was requested: the rungs
    name picture sizes, which it has none of.
    """
    if info.video is None:
        if info.audio is None:
            raise InvalidMedia("The file holds no video or audio stream.")
        return [AUDIO_ONLY]
    if requested is not None:
        unknown = sorted(set(requested) - RUNG_NAMES)
        if unknown:
            raise ValueError(f"unknown rendition names: {', '.join(unknown)}")
        if not requested:
            raise ValueError("requested must name at least one rendition (None means all)")
    video = info.video
    fps = _source_fps(video)
    src_short = min(video.width, video.height)
    wanted = LADDER if requested is None else tuple(r for r in LADDER if r.name in requested)
    fitting = [r for r in wanted if r.short_side <= src_short]
    if fitting:
        return [_fit(r, r.short_side, video.width, video.height, fps) for r in fitting]
    # Nothing fits: the source is smaller than every wanted rung. Deliver it at its own size
    # rather than fail or upscale (an odd side rounds down for the same reason); the lowest
    # rung's bitrates are plenty for so few pixels.
    own_short = max(2, src_short - src_short % 2)
    return [_fit(LADDER[0], own_short, video.width, video.height, fps)]
