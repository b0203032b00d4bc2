"""Planning a transcode in parts: whole segments per part, the last to the end of the stream,
the sound a part of its own only beside several video parts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.config import Settings
from services.contract.parts import SOUND, VIDEO
from services.media.parts import part_length, part_thumbnails, part_window, plan_parts
from services.media.playlists import join_media_playlists
from services.media.probe import AudioStream, MediaInfo, VideoStream
from services.media.storyboard import StoryboardPlan, Thumbnails

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


BOARD = StoryboardPlan(interval=5.0, count=30, columns=10, rows=3, tile_width=160, tile_height=90)


def test_a_part_decodes_from_a_second_before_its_start_on_the_sources_clock() -> None:
    source = replace(info(150), video=replace(VIDEO_STREAM, start_time=10.0))
    middle = plan_parts(source, segment_seconds=4, part_seconds=60)[1]
    window = part_window(middle, source, BOARD)
    assert (window.start, window.end) == (70.0, 130.0)  # the stream starts at 10 s
    assert window.seek == 59.0  # from the start of the file, a second early
    assert window.read_seconds == 60.0 + 1.0 + 2.0  # a little past the end, in decode order
    assert window.first_segment == 15
    # Thumbnails every 5 s: those at 60 … 115 s of the video are this part's.
    assert window.thumbnails == Thumbnails(first=12, count=12, at=70.0)


def test_the_poster_belongs_to_the_part_that_holds_its_instant() -> None:
    source = info(150)
    windows = [
        part_window(part, source, BOARD) for part in plan_parts(source, segment_seconds=4, part_seconds=60)
    ]
    holding = [window for window in windows if window.poster_at is not None]
    assert len(holding) == 1 and holding[0].start <= holding[0].poster_at < (holding[0].end or 1e9)


def test_the_sound_part_reads_the_whole_source() -> None:
    source = info(150)
    sound = plan_parts(source, segment_seconds=4, part_seconds=60)[-1]
    window = part_window(sound, source, BOARD)
    assert (window.seek, window.read_seconds, window.end, window.thumbnails) == (0.0, None, None, None)


def test_parts_thumbnails_cover_the_storyboard_once() -> None:
    bounds = [(0.0, 60.0), (60.0, 120.0), (120.0, None)]
    found = [part_thumbnails(begin, end, 0.0, BOARD) for begin, end in bounds]
    firsts = [thumbs.first for thumbs in found if thumbs]
    counts = [thumbs.count for thumbs in found if thumbs]
    assert firsts == [0, 12, 24] and sum(counts) == BOARD.count


def test_a_parts_time_limit_follows_its_length() -> None:
    settings = Settings(part_time_limit_factor=20, part_min_time_limit=600)
    assert settings.part_time_limits(10) == (600, 660)  # short parts get the floor
    assert settings.part_time_limits(60) == (1200, 1320)
    assert settings.part_time_limits(7200) == (144000, 158400)  # the sound part of two hours


def test_joined_playlists_are_the_parts_segments_in_order_under_one_header() -> None:
    first = (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.000,\nseg_00000.ts\n#EXT-X-ENDLIST\n"
    )
    second = (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:5\n#EXTINF:4.500,\nseg_00001.ts\n#EXT-X-ENDLIST\n"
    )
    joined = join_media_playlists([first, second])
    assert joined.splitlines() == [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-TARGETDURATION:5",
        "#EXTINF:4.000,",
        "seg_00000.ts",
        "#EXTINF:4.500,",
        "seg_00001.ts",
        "#EXT-X-ENDLIST",
    ]
