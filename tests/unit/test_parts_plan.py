"""Planning a transcode in parts: whole segments per part, the last to the end of the stream,
the sound a part of its own only beside several video parts."""

from __future__ import annotations

import pytest

from services.parts import SOUND, VIDEO, part_length, plan_parts
from services.probe import AudioStream, MediaInfo, VideoStream

VIDEO_STREAM = VideoStream(codec="h264", width=1920, height=1080, fps=30.0, pix_fmt="yuv420p", rotation=0)
AUDIO_STREAM = AudioStream(codec="aac", channels=2, sample_rate=48000)


def info(duration: float, *, video: bool = True, audio: bool = True, demuxer: str = "mov,mp4") -> MediaInfo:
    return MediaInfo(
        format_name=demuxer,
        duration=duration,
        size_bytes=1,
        bit_rate=1,
        video=VIDEO_STREAM if video else None,
        audio=AUDIO_STREAM if audio else None,
        stream_count=int(video) + int(audio),
    )


def spans(parts: list) -> list[tuple[str, float, float | None, int]]:  # type: ignore[type-arg]
    return [(p.kind, p.start_seconds, p.end_seconds, p.first_segment) for p in parts]


@pytest.mark.parametrize(("segment", "wanted", "length"), [(4, 60, 60), (4, 62, 64), (6, 60, 60), (4, 1, 4)])
def test_a_part_is_a_whole_number_of_segments(segment: int, wanted: float, length: int) -> None:
    assert part_length(segment, wanted) == length


def test_a_short_clip_is_one_part_with_its_sound() -> None:
    assert spans(plan_parts(info(30), segment_seconds=4, part_seconds=60)) == [(VIDEO, 0.0, None, 0)]


def test_a_long_source_has_parts_on_segment_boundaries_and_its_sound_apart() -> None:
    parts = plan_parts(info(150), segment_seconds=4, part_seconds=60)
    assert spans(parts) == [
        (VIDEO, 0.0, 60.0, 0),
        (VIDEO, 60.0, 120.0, 15),
        (VIDEO, 120.0, None, 30),  # to the end of the stream, whatever the probe said
        (SOUND, 0.0, None, 0),
    ]
    assert [p.index for p in parts] == [0, 1, 2, 3]
    assert [p.span_seconds for p in parts] == [60.0, 60.0, 30.0, 150.0]


def test_a_tail_shorter_than_a_segment_joins_the_part_before() -> None:
    parts = plan_parts(info(121.5, audio=False), segment_seconds=4, part_seconds=60)
    assert spans(parts) == [(VIDEO, 0.0, 60.0, 0), (VIDEO, 60.0, None, 15)]
    assert parts[-1].span_seconds == 61.5


def test_a_source_that_cannot_seek_is_one_part() -> None:
    assert spans(plan_parts(info(600, demuxer="h264"), segment_seconds=4, part_seconds=60)) == [
        (VIDEO, 0.0, None, 0)
    ]


def test_sound_alone_is_one_sound_part() -> None:
    assert spans(plan_parts(info(3600, video=False), segment_seconds=4, part_seconds=60)) == [
        (SOUND, 0.0, None, 0)
    ]
