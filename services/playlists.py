"""HLS playlists: the master we write over ffmpeg's, and the bit rates measured for it. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.ladder import Rendition

MASTER_PLAYLIST = "master.m3u8"
MEDIA_PLAYLIST = "index.m3u8"

# (level_idc, max macroblocks per second, max macroblocks per frame) from H.264 Table A-1.
# The level is declared per rendition so the master playlist's CODECS tells a player the
# truth, and so x264 bounds its reference frames to what that level's decoders hold.
_H264_LEVELS: tuple[tuple[int, int, int], ...] = (
    (30, 40_500, 1_620),
    (31, 108_000, 3_600),
    (32, 216_000, 5_120),
    (40, 245_760, 8_192),
    (42, 522_240, 8_704),
    (50, 589_824, 22_080),
    (51, 983_040, 36_864),
    (52, 2_073_600, 36_864),
)
AAC_LC = "mp4a.40.2"


def h264_level(rendition: Rendition) -> int:
    """Smallest H.264 level_idc (e.g. 40 for 4.0) whose decoders handle this rendition."""
    frame_mbs = -(-rendition.width // 16) * -(-rendition.height // 16)
    mbs_per_second = frame_mbs * rendition.fps
    for level, max_mbps, max_fs in _H264_LEVELS:
        if frame_mbs <= max_fs and mbs_per_second <= max_mbps:
            return level
    return _H264_LEVELS[-1][0]


def codecs_attribute(rendition: Rendition, has_audio: bool) -> str:
    if rendition.audio_only:
        return AAC_LC
    # avc1.PPCCLL: profile_idc 100 (High) = 0x64, no constraint flags, then the level.
    video = f"avc1.6400{h264_level(rendition):02x}"
    return f"{video},{AAC_LC}" if has_audio else video


@dataclass(frozen=True)
class Segment:
    uri: str
    duration: float


@dataclass(frozen=True)
class MediaPlaylist:
    target_duration: float
    segments: list[Segment]


def parse_media_playlist(text: str) -> MediaPlaylist:
    """The segments of a VOD media playlist as ffmpeg writes it (EXTINF then the URI)."""
    target, duration, segments = 0.0, None, []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = float(line.partition(":")[2])
        elif line.startswith("#EXTINF:"):
            duration = float(line.partition(":")[2].split(",")[0])
        elif line and not line.startswith("#") and duration is not None:
            segments.append(Segment(line, duration))
            duration = None
    return MediaPlaylist(target, segments)


@dataclass(frozen=True)
class Bitrates:
    peak: int  # bits/s, for BANDWIDTH
    average: int  # bits/s, for AVERAGE-BANDWIDTH


def measure_bitrates(sizes: Sequence[tuple[float, int]], target_duration: float) -> Bitrates:
    """Peak and average bit rate of a variant from its segments' (duration s, size bytes).

    The peak is HLS's "peak segment bit rate" (RFC 8216bis 4.3.4.2): the highest rate of any
    run of consecutive segments lasting 0.5 to 1.5 target durations, so a lone short last
    segment, whose container overhead spreads over little time, does not set it. When no run
    qualifies (a clip shorter than half a segment) the whole stream's rate is the peak.
    """
    if not sizes:
        raise ValueError("a variant needs at least one segment")
    total_seconds = sum(duration for duration, _ in sizes)
    total_bits = 8 * sum(size for _, size in sizes)
    average = math.ceil(total_bits / total_seconds) if total_seconds > 0 else 0
    low, high = 0.5 * target_duration, 1.5 * target_duration
    peak = 0
    for start in range(len(sizes)):
        seconds = bits = 0.0
        for duration, size in sizes[start:]:
            seconds, bits = seconds + duration, bits + 8 * size
            if seconds > high:
                break
            if seconds >= low:
                peak = max(peak, math.ceil(bits / seconds))
    return Bitrates(peak=max(peak, average), average=average)


def write_master_playlist(
    renditions: Sequence[Rendition], has_audio: bool, bitrates: Sequence[Bitrates], *, fmp4: bool = False
) -> str:
    """The master playlist for the output of ``build_hls_command``, to replace ffmpeg's.

    ffmpeg 5.1 writes RESOLUTION and CODECS, but its BANDWIDTH is 1.1 x the *target* rate
    while HLS asks for the measured peak, and it leaves out AVERAGE-BANDWIDTH and FRAME-RATE,
    which players use to pick a first variant and to skip frame rates they cannot decode.
    """
    # fMP4 media playlists need version 7 (EXT-X-MAP in a VOD playlist); the master says the same.
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{7 if fmp4 else 3}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rendition, measured in zip(renditions, bitrates, strict=True):
        attributes = [f"BANDWIDTH={measured.peak}", f"AVERAGE-BANDWIDTH={measured.average}"]
        if not rendition.audio_only:
            attributes += [
                f"RESOLUTION={rendition.width}x{rendition.height}",
                f"FRAME-RATE={rendition.fps:.3f}",
            ]
        attributes.append(f'CODECS="{codecs_attribute(rendition, has_audio)}"')
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attributes), f"{rendition.name}/{MEDIA_PLAYLIST}"]
    return "\n".join(lines) + "\n"


def referenced_uris(text: str) -> list[str]:
    """Every URI a playlist names: its segment lines and the URI attributes of its tags (an
    fMP4 rendition's EXT-X-MAP init section, a master's media groups)."""
    uris = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            uris.append(line)
        elif line.startswith("#") and 'URI="' in line:
            uris.append(line.partition('URI="')[2].partition('"')[0])
    return uris
