"""Decide which renditions a source gets: pure, from a probe result and the job's options.

Pictures: one ladder of sizes per video codec, bit rates that follow the frame rate and never
ask for more than the source holds. Sound: every kept sound track once, as its own audio
rendition that every video rendition refers to. Text: the source's subtitle tracks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from services.errors import InvalidMedia
from services.media.probe import AudioStream, MediaInfo, SubtitleStream, VideoStream

VideoCodec = Literal["h264", "hevc", "av1"]
RateControl = Literal["capped_crf", "bitrate"]
VIDEO_CODECS: tuple[VideoCodec, ...] = ("h264", "hevc", "av1")
RATE_CONTROLS: tuple[RateControl, ...] = ("capped_crf", "bitrate")
# Chosen by bench/quality.py (figures in bench/README.md): capped CRF saved 31% of the bytes on
# testsrc2 but its 5th-percentile VMAF fell 3-6 points on the rungs below 1080p, and on a noisy
# source it spent more than the fixed ladder; the bar (20% fewer bytes, at most 1 point
# lower) is not met, so the fixed ladder stays the default and capped CRF is a job option.
DEFAULT_RATE_CONTROL: RateControl = "bitrate"

# Renditions below this short side are phone-sized; players expect at most 30 fps there.
HIGH_FPS_MIN_SHORT_SIDE = 720
HIGH_FPS_CAP = 60.0
LOW_FPS_CAP = 30.0
# ffprobe reports 0 when a container has no usable frame rate (some WebM, VFR captures).
DEFAULT_FPS = 30.0
# The rung rates are for 30 fps. Twice the frames need about 1.5x the bits (consecutive
# frames differ less, so each costs less): rate x (fps / 30) ** 0.585, 2 ** 0.585 = 1.5.
REFERENCE_FPS = 30.0
FPS_EXPONENT = 0.585
MIN_FPS_FACTOR, MAX_FPS_FACTOR = 0.5, 1.5
# Bits each codec needs for the picture H.264 makes at 1.0, at these presets.
CODEC_EFFICIENCY: dict[str, float] = {"h264": 1.0, "hevc": 0.7, "av1": 0.6}
# CRF of each codec in capped-CRF mode: the quality asked for, when maxrate does not bind.
CRF: dict[str, int] = {"h264": 23, "hevc": 25}
# maxrate 1.07x and a 1.5x buffer keep segment sizes close to the declared peak, so a
# player's bandwidth estimate holds, while leaving the encoder room for hard scenes.
MAXRATE_RATIO = 1.07
BUFSIZE_RATIO = 1.5
# A rung capped to within this of the rung above costs as much and shows less: dropped.
DUPLICATE_RATIO = 0.85
# What a sound track costs when the file does not say (to find the picture's share).
ASSUMED_AUDIO_BITRATE = 128_000
AUDIO_BITRATE = 128_000
AUDIO_CHANNELS = 2
AUDIO_SAMPLE_RATE = 48_000


@dataclass(frozen=True)
class Rendition:
    name: str  # "240p" … "1080p" (H.264), "720p-hevc", or "<short side>p" below the ladder
    width: int  # even: 4:2:0 subsamples chroma by two in both directions
    height: int
    fps: float
    video_bitrate: int  # bits/s: the target in bitrate mode, the rung's nominal rate in CRF mode
    maxrate: int  # bits/s, the VBV ceiling in both modes
    bufsize: int  # bits
    codec: VideoCodec = "h264"
    crf: int | None = None  # capped CRF: the quality target; maxrate and bufsize cap it

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)


@dataclass(frozen=True)
class AudioRendition:
    """One sound track of the source, encoded once (AAC, 48 kHz, stereo) as its own playlist."""

    name: str  # "audio-0", "audio-1", …: the folder and the playlist's name
    stream_index: int  # in the source file
    language: str  # BCP 47 for LANGUAGE, "" when the file does not say
    title: str  # NAME in the player's menu
    default: bool
    bitrate: int = AUDIO_BITRATE
    channels: int = AUDIO_CHANNELS
    sample_rate: int = AUDIO_SAMPLE_RATE


@dataclass(frozen=True)
class SubtitleRendition:
    """One text subtitle track of the source, converted to one WebVTT file."""

    name: str  # "text-0", …
    stream_index: int
    language: str
    title: str
    default: bool
    forced: bool


def _rung(short_side: int, video_kbps: int) -> Rendition:
    return Rendition(
        name=f"{short_side}p",
        width=short_side,  # placeholders: plan_ladder fits both sides to the source
        height=short_side,
        fps=DEFAULT_FPS,
        video_bitrate=video_kbps * 1000,
        maxrate=round(video_kbps * 1000 * MAXRATE_RATIO),
        bufsize=round(video_kbps * 1000 * BUFSIZE_RATIO),
    )


LADDER: tuple[Rendition, ...] = (
    _rung(240, 400),
    _rung(360, 800),
    _rung(480, 1400),
    _rung(720, 2800),
    _rung(1080, 5000),
)
RUNG_NAMES: frozenset[str] = frozenset(r.name for r in LADDER)


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


def fps_factor(fps: float) -> float:
    """How a rung's 30 fps rate scales to ``fps`` (60 fps: 1.5x)."""
    if fps <= 0:
        return 1.0
    factor: float = (fps / REFERENCE_FPS) ** FPS_EXPONENT
    return min(MAX_FPS_FACTOR, max(MIN_FPS_FACTOR, factor))


def source_video_bitrate(info: MediaInfo) -> int:
    """Bits/s the source spends on its picture: the stream's own figure, else the file's less
    its sound; 0 when neither is known (then nothing caps the ladder)."""
    if info.video is None:
        return 0
    if info.video.bit_rate > 0:
        return info.video.bit_rate
    if info.bit_rate <= 0:
        return 0
    sound = sum(ASSUMED_AUDIO_BITRATE for _ in info.audio_tracks)
    return max(0, info.bit_rate - sound)


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


def _rated(rendition: Rendition, codec: VideoCodec, rate_control: RateControl, cap: int) -> Rendition:
    rate = rendition.video_bitrate * fps_factor(rendition.fps) * CODEC_EFFICIENCY[codec]
    if cap > 0:
        # Re-encoding never adds detail: more bits than the source spent buy nothing.
        rate = min(rate, cap)
    rate = max(1000, 1000 * math.floor(rate / 1000))  # whole kb/s, never above the cap
    return replace(
        rendition,
        name=rendition.name if codec == "h264" else f"{rendition.name}-{codec}",
        codec=codec,
        video_bitrate=int(rate),
        maxrate=round(rate * MAXRATE_RATIO),
        bufsize=round(rate * BUFSIZE_RATIO),
        # SVT-AV1 in ffmpeg 5.1 has no VBV cap beside CRF; AV1 always runs at its bit rate.
        crf=CRF.get(codec) if rate_control == "capped_crf" else None,
    )


def _without_duplicates(renditions: list[Rendition]) -> list[Rendition]:
    """Drop each rung whose rate the cap brought within DUPLICATE_RATIO of the rung above it:
    the same bits at a smaller size serve no viewer (lowest first, as given)."""
    kept: list[Rendition] = []
    for rendition in reversed(renditions):
        if kept and rendition.video_bitrate > DUPLICATE_RATIO * kept[-1].video_bitrate:
            continue
        kept.append(rendition)
    return kept[::-1]


def plan_ladder(
    info: MediaInfo,
    requested: Sequence[str] | None = None,
    *,
    codecs: Sequence[VideoCodec] = ("h264",),
    rate_control: RateControl = "bitrate",
) -> list[Rendition]:
    """Video renditions for ``info``, lowest first per codec: never above the source, at its
    display aspect, rates for its frame rate and capped at its own bit rate.

    ``requested`` narrows the standard rungs by name; names are validated by the API, so an
    unknown one here is a programming error (``ValueError``), not bad media. A source with
    sound and no picture gets no video rendition (its sound is in ``plan_audio``).
    """
    if info.video is None:
        if info.audio is None:
            raise InvalidMedia("The file holds no video or audio stream.")
        return []
    if requested is not None:
        unknown = sorted(set(requested) - RUNG_NAMES)
        if unknown:
            raise ValueError(f"unknown rendition names: {', '.join(unknown)}")
        if not requested:
            raise ValueError("requested must name at least one rendition (None means all)")
    if not codecs:
        raise ValueError("at least one video codec is needed")
    video = info.video
    fps = _source_fps(video)
    src_short = min(video.width, video.height)
    wanted = LADDER if requested is None else tuple(r for r in LADDER if r.name in requested)
    fitting = [
        _fit(r, r.short_side, video.width, video.height, fps) for r in wanted if r.short_side <= src_short
    ]
    if not fitting:
        # Nothing fits: the source is smaller than every wanted rung. Deliver it at its own
        # size rather than fail or upscale (an odd side rounds down for the same reason); the
        # lowest rung's bitrates are plenty for so few pixels.
        own_short = max(2, src_short - src_short % 2)
        fitting = [_fit(LADDER[0], own_short, video.width, video.height, fps)]
    cap = source_video_bitrate(info)
    planned: list[Rendition] = []
    for codec in dict.fromkeys(codecs):
        planned += _without_duplicates([_rated(r, codec, rate_control, cap) for r in fitting])
    return planned


# ISO 639-2 (what files carry) to the BCP 47 tag players expect, for the common languages;
# a code not listed stays as it is, which is still a valid BCP 47 tag.
_LANGUAGES: dict[str, tuple[str, str]] = {
    "eng": ("en", "English"), "fre": ("fr", "French"), "fra": ("fr", "French"),
    "ger": ("de", "German"), "deu": ("de", "German"), "spa": ("es", "Spanish"),
    "ita": ("it", "Italian"), "por": ("pt", "Portuguese"), "dut": ("nl", "Dutch"),
    "nld": ("nl", "Dutch"), "jpn": ("ja", "Japanese"), "chi": ("zh", "Chinese"),
    "zho": ("zh", "Chinese"), "kor": ("ko", "Korean"), "rus": ("ru", "Russian"),
    "ara": ("ar", "Arabic"), "hin": ("hi", "Hindi"), "swe": ("sv", "Swedish"),
    "pol": ("pl", "Polish"), "tur": ("tr", "Turkish"),
}  # fmt: skip


def language_of(tag: str) -> tuple[str, str]:
    """(BCP 47 tag, English name) of a file's language tag; ("", "") when it has none."""
    code = tag.strip().lower()
    if not code or code == "und":
        return "", ""
    bcp47, name = _LANGUAGES.get(code, (code, code))
    return bcp47, name


def _track_name(title: str, language: str, position: int, what: str) -> str:
    return title or language_of(language)[1] or f"{what} {position + 1}"


def plan_audio(info: MediaInfo) -> list[AudioRendition]:
    """The main sound track (the default, else the first), then one more rendition for each
    further track in a language not yet kept; untagged extra tracks (commentary, a second
    mix) are left out, since a player could not tell a listener what they are."""
    if info.audio is None:
        return []
    tracks: list[AudioStream] = [info.audio]
    languages = {info.audio.language}
    for track in info.audio_tracks:
        if track.language and track.language not in languages:
            tracks.append(track)
            languages.add(track.language)
    return [
        AudioRendition(
            name=f"audio-{position}",
            stream_index=track.index,
            language=language_of(track.language)[0],
            title=_track_name(track.title, track.language, position, "Sound"),
            default=position == 0,
        )
        for position, track in enumerate(tracks)
    ]


def plan_subtitles(info: MediaInfo) -> list[SubtitleRendition]:
    """Every text subtitle track of a source with a picture, in file order."""
    if info.video is None:
        return []
    tracks: Sequence[SubtitleStream] = info.subtitles
    return [
        SubtitleRendition(
            name=f"text-{position}",
            stream_index=track.index,
            language=language_of(track.language)[0],
            title=_track_name(track.title, track.language, position, "Subtitles"),
            default=track.default,
            forced=track.forced,
        )
        for position, track in enumerate(tracks)
    ]
