"""Planning a transcode in parts: pure, from the probe and the settings.

A part is a whole number of segments (PART_SECONDS, rounded to segments), so every part starts
on a segment boundary, where every rendition has a keyframe, and its segments' numbers and
timestamps continue the previous part's. The last part has no end: it runs to the end of the
stream whatever the container's duration says. A short clip is one part; a source that cannot
seek (no index to find a part's start by) is one part too. With several parts the sound is a
part of its own, encoded once over the whole source (AAC pieces joined click at every join);
with one, the same ffmpeg encodes it beside the video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.contract.parts import SOUND, VIDEO, PartPlan
from services.media.probe import MediaInfo
from services.media.storyboard import StoryboardPlan, Thumbnails, poster_time

# Demuxers of raw elementary streams: no index, and no timestamps to seek by.
UNSEEKABLE_DEMUXERS = frozenset(
    {"h264", "hevc", "mpegvideo", "m4v", "rawvideo", "yuv4mpegpipe", "mjpeg", "vc1", "dirac", "av1"}
)
# A part decodes from the keyframe before this much ahead of its start, so the frames at its
# start decode whole (their references, B-frame reordering) whatever the source's GOP.
PREROLL_SECONDS = 1.0
# A part stops reading this long past its end: frames are read in decode order, a little
# behind their presentation times.
READ_PAST_END_SECONDS = 2.0
EPSILON = 1e-6


@dataclass(frozen=True)
class PartWindow:
    """What one part's ffmpeg reads and keeps, on the source's own clock (ffmpeg's copyts)."""

    start: float  # keep frames from here …
    end: float | None  # … up to here (None: to the end of the stream)
    seek: float  # where to start reading, from the start of the file
    read_seconds: float | None  # how much to read from there (None: to the end)
    first_segment: int
    poster_at: float | None = None  # the poster's instant, when it falls in this part
    thumbnails: Thumbnails | None = None


def seekable(info: MediaInfo) -> bool:
    return info.demuxer not in UNSEEKABLE_DEMUXERS


def part_length(segment_seconds: int, part_seconds: float) -> int:
    """Seconds per part: a whole number of segments, at least one."""
    return segment_seconds * max(1, round(part_seconds / segment_seconds))


def plan_parts(info: MediaInfo, *, segment_seconds: int, part_seconds: float) -> list[PartPlan]:
    """The parts of a transcode of `info`, video parts first (by start), then the sound part
    when there are several video parts, or no video at all."""
    duration = info.duration
    if info.video is None:
        return [PartPlan(0, SOUND, 0.0, None, duration, 0)]
    length = part_length(segment_seconds, part_seconds)
    count = max(1, math.ceil(duration / length - 1e-9)) if seekable(info) else 1
    # A last part of less than a segment is folded into the one before: a process to start for
    # a few frames costs more than it saves.
    if count > 1 and duration - (count - 1) * length < segment_seconds:
        count -= 1
    per_part = length // segment_seconds
    parts = [
        PartPlan(
            index=index,
            kind=VIDEO,
            start_seconds=float(index * length),
            end_seconds=float((index + 1) * length) if index < count - 1 else None,
            span_seconds=float(length) if index < count - 1 else max(0.0, duration - index * length),
            first_segment=index * per_part,
        )
        for index in range(count)
    ]
    if count > 1 and info.has_audio:
        parts.append(PartPlan(count, SOUND, 0.0, None, duration, 0))
    return parts


def sound_apart(parts: list[PartPlan]) -> bool:
    """Whether the sound is a part of its own (else the one video part encodes it too)."""
    return any(part.kind == SOUND for part in parts)


def part_window(part: PartPlan, info: MediaInfo, storyboard: StoryboardPlan | None) -> PartWindow:
    """The window of one part. Times in a part are the source's own (its first video frame at
    `origin`, the video stream's start time), so every part, and the sound, share one clock."""
    origin = info.video.start_time if info.video is not None else info.start_time
    if part.kind == SOUND:
        return PartWindow(start=origin, end=None, seek=0.0, read_seconds=None, first_segment=0)
    begin, finish = part.start_seconds, part.end_seconds
    seek = max(0.0, begin - PREROLL_SECONDS)
    poster = poster_time(info.duration)
    holds_poster = begin <= poster and (finish is None or poster < finish)
    return PartWindow(
        start=origin + begin,
        end=None if finish is None else origin + finish,
        seek=seek,
        read_seconds=None if finish is None else finish - seek + READ_PAST_END_SECONDS,
        first_segment=part.first_segment,
        poster_at=origin + poster if storyboard is not None and holds_poster else None,
        thumbnails=None if storyboard is None else part_thumbnails(begin, finish, origin, storyboard),
    )


def part_thumbnails(
    begin: float, finish: float | None, origin: float, storyboard: StoryboardPlan
) -> Thumbnails | None:
    """The storyboard's thumbnails whose instants fall in [begin, finish)."""
    first = math.ceil(begin / storyboard.interval - EPSILON)
    after = storyboard.count
    if finish is not None:
        after = min(after, math.ceil(finish / storyboard.interval - EPSILON))
    if after <= first:
        return None
    return Thumbnails(first, after - first, origin + first * storyboard.interval)
