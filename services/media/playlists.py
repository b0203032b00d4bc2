"""HLS playlists: the master we write over ffmpeg's, and the bit rates measured for it. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.media.ladder import AudioRendition, Rendition, SubtitleRendition

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
# (general_level_idc, max luma picture size, max luma samples per second), H.265 Table A.8.
_HEVC_LEVELS: tuple[tuple[int, int, int], ...] = (
    (30, 36_864, 552_960),
    (60, 122_880, 3_686_400),
    (63, 245_760, 7_372_800),
    (90, 552_960, 16_588_800),
    (93, 983_040, 33_177_600),
    (120, 2_228_224, 66_846_720),
    (123, 2_228_224, 133_693_440),
    (150, 8_912_896, 267_386_880),
    (153, 8_912_896, 534_773_760),
    (156, 8_912_896, 1_069_547_520),
)
# (seq_level_idx, max picture size, max display rate in samples per second), AV1 Annex A.3.
_AV1_LEVELS: tuple[tuple[int, int, int], ...] = (
    (0, 147_456, 4_423_680),
    (1, 278_784, 8_363_520),
    (4, 665_856, 19_975_680),
    (5, 1_065_024, 31_950_720),
    (8, 2_359_296, 70_778_880),
    (9, 2_359_296, 141_557_760),
    (12, 8_912_896, 267_386_880),
    (13, 8_912_896, 534_773_760),
)
AAC_LC = "mp4a.40.2"
AUDIO_GROUP = "audio"
SUBTITLE_GROUP = "subs"


def h264_level(rendition: Rendition) -> int:
    """Smallest H.264 level_idc (e.g. 40 for 4.0) whose decoders handle this rendition."""
    frame_mbs = -(-rendition.width // 16) * -(-rendition.height // 16)
    mbs_per_second = frame_mbs * rendition.fps
    for level, max_mbps, max_fs in _H264_LEVELS:
        if frame_mbs <= max_fs and mbs_per_second <= max_mbps:
            return level
    return _H264_LEVELS[-1][0]


def _sample_level(levels: Sequence[tuple[int, int, int]], rendition: Rendition) -> int:
    samples = rendition.width * rendition.height
    for level, max_picture, max_rate in levels:
        if samples <= max_picture and samples * rendition.fps <= max_rate:
            return level
    return levels[-1][0]


def hevc_level(rendition: Rendition) -> int:
    """Smallest HEVC general_level_idc (30 x the level: 93 for 3.1) for this rendition."""
    return _sample_level(_HEVC_LEVELS, rendition)


def av1_level(rendition: Rendition) -> int:
    """Smallest AV1 seq_level_idx (8 for 4.0) for this rendition."""
    return _sample_level(_AV1_LEVELS, rendition)


def video_codec(rendition: Rendition) -> str:
    """The RFC 6381 codec string of a video rendition, as CODECS and DASH's codecs state it."""
    if rendition.codec == "hevc":
        # hvc1.<Main profile 1>.<compatibility flags 6>.L<level, Main tier>.B0 (no constraints).
        return f"hvc1.1.6.L{hevc_level(rendition)}.B0"
    if rendition.codec == "av1":
        # av01.<Main profile 0>.<level><Main tier M>.<8 bits>
        return f"av01.0.{av1_level(rendition):02d}M.08"
    # avc1.PPCCLL: profile_idc 100 (High) = 0x64, no constraint flags, then the level.
    return f"avc1.6400{h264_level(rendition):02x}"


def codecs_attribute(rendition: Rendition, has_audio: bool) -> str:
    """CODECS of a variant: its picture's codec and, when it refers to audio renditions, theirs."""
    video = video_codec(rendition)
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


def init_section(text: str) -> str:
    """The init section an fMP4 media playlist names (EXT-X-MAP), "" for MPEG-TS."""
    for line in text.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            return line.partition('URI="')[2].partition('"')[0]
    return ""


def join_media_playlists(texts: Sequence[str]) -> str:
    """One VOD media playlist of the parts' playlists, in order: the first one's header (its
    version, flags and init section, the same in every part), the longest target duration, and
    every part's segments. Each part numbers its segments on from the one before, so the join
    is their concatenation."""
    if not texts:
        raise ValueError("no playlists to join")
    header, entries = [], []
    target = max(parse_media_playlist(text).target_duration for text in texts)
    for index, text in enumerate(texts):
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("#EXTINF:") or (line and not line.startswith("#")):
                entries.append(line)
            elif index == 0 and line.startswith("#EXT-X-TARGETDURATION:"):
                header.append(f"#EXT-X-TARGETDURATION:{target:g}")
            elif index == 0 and line and line != "#EXT-X-ENDLIST":
                header.append(line)
    return "\n".join([*header, *entries, "#EXT-X-ENDLIST", ""])


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


def with_audio(video: Bitrates, audio: Sequence[Bitrates]) -> Bitrates:
    """A variant's rates with the audio renditions it refers to: the peak with the loudest
    track's (any may be chosen), the average with the default (first) track's."""
    peak = max((rates.peak for rates in audio), default=0)
    average = audio[0].average if audio else 0
    return Bitrates(peak=video.peak + peak, average=video.average + average)


@dataclass(frozen=True)
class SubtitleEntry:
    """A subtitle rendition as the master lists it."""

    language: str
    name: str
    uri: str
    default: bool = False
    forced: bool = False


def subtitle_entries(subtitles: Sequence[SubtitleRendition]) -> list[SubtitleEntry]:
    return [
        SubtitleEntry(s.language, s.title, f"{s.name}/{MEDIA_PLAYLIST}", s.default, s.forced)
        for s in subtitles
    ]


def _quoted(value: str) -> str:
    # A quoted-string may hold neither a double quote nor a line break (RFC 8216 4.2).
    return '"' + value.replace('"', "").replace("\n", " ").replace("\r", " ") + '"'


def _unique(names: Sequence[str]) -> list[str]:
    """NAME must differ within a group: a repeated one gets its position."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _media_line(
    kind: str, group: str, language: str, name: str, default: bool, uri: str, extra: str = ""
) -> str:
    attributes = [f"TYPE={kind}", f'GROUP-ID="{group}"']
    if language:
        attributes.append(f"LANGUAGE={_quoted(language)}")
    attributes += [
        f"NAME={_quoted(name)}",
        f"DEFAULT={'YES' if default else 'NO'}",
        "AUTOSELECT=YES",
    ]
    if extra:
        attributes.append(extra)
    attributes.append(f'URI="{uri}"')
    return "#EXT-X-MEDIA:" + ",".join(attributes)


def subtitle_line(entry: SubtitleEntry) -> str:
    forced = "FORCED=YES" if entry.forced else ""
    return _media_line(
        "SUBTITLES", SUBTITLE_GROUP, entry.language, entry.name, entry.default, entry.uri, forced
    )


def write_master_playlist(
    renditions: Sequence[Rendition],
    bitrates: Sequence[Bitrates],
    *,
    audio: Sequence[tuple[AudioRendition, Bitrates]] = (),
    subtitles: Sequence[SubtitleEntry] = (),
    fmp4: bool = False,
) -> str:
    """The master playlist for the output of ``build_hls_command``, to replace ffmpeg's.

    Sound is in audio renditions (EXT-X-MEDIA TYPE=AUDIO, the default track first) that every
    video variant names in AUDIO; each variant's BANDWIDTH is its measured peak plus the
    loudest audio rendition's, AVERAGE-BANDWIDTH adds the default track's average, as HLS
    asks for a variant together with the renditions it refers to. A source without picture
    gets one variant, the default sound track itself, so every player has something to play.
    """
    # fMP4 media playlists need version 7 (EXT-X-MAP in a VOD playlist); the master says the same.
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{7 if fmp4 else 3}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    names = _unique([track.title for track, _ in audio])
    for (track, _), name in zip(audio, names, strict=True):
        lines.append(
            _media_line(
                "AUDIO", AUDIO_GROUP, track.language, name, track.default, f"{track.name}/{MEDIA_PLAYLIST}"
            )
        )
    for entry, name in zip(subtitles, _unique([entry.name for entry in subtitles]), strict=True):
        lines.append(
            subtitle_line(SubtitleEntry(entry.language, name, entry.uri, entry.default, entry.forced))
        )
    groups = []
    if audio:
        groups.append(f'AUDIO="{AUDIO_GROUP}"')
    if subtitles:
        groups.append(f'SUBTITLES="{SUBTITLE_GROUP}"')
    audio_rates = [measured for _, measured in audio]
    if not renditions and audio:
        track, measured = audio[0]
        attributes = [f"BANDWIDTH={measured.peak}", f"AVERAGE-BANDWIDTH={measured.average}"]
        attributes += [f'CODECS="{AAC_LC}"', *groups]
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attributes), f"{track.name}/{MEDIA_PLAYLIST}"]
    for rendition, measured in zip(renditions, bitrates, strict=True):
        declared = with_audio(measured, audio_rates)
        attributes = [
            f"BANDWIDTH={declared.peak}",
            f"AVERAGE-BANDWIDTH={declared.average}",
            f"RESOLUTION={rendition.width}x{rendition.height}",
            f"FRAME-RATE={rendition.fps:.3f}",
            f'CODECS="{codecs_attribute(rendition, bool(audio))}"',
            *groups,
        ]
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
