from __future__ import annotations

import pytest

from services.errors import InvalidMedia
from services.ladder import AUDIO_ONLY, LADDER, Rendition, plan_ladder
from services.probe import AudioStream, MediaInfo, VideoStream


def media(
    width: int, height: int, fps: float = 30.0, *, video: bool = True, audio: bool = True, vfr: bool = False
) -> MediaInfo:
    return MediaInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration=10.0,
        size_bytes=1_000_000,
        bit_rate=800_000,
        video=VideoStream("h264", width, height, fps, "yuv420p", 0, vfr) if video else None,
        audio=AudioStream("aac", 2, 48_000) if audio else None,
        stream_count=2 if video else 1,
    )


def sizes(renditions: list[Rendition]) -> list[tuple[str, int, int]]:
    return [(r.name, r.width, r.height) for r in renditions]


def test_landscape_720p_gets_the_rungs_up_to_its_own_height() -> None:
    assert sizes(plan_ladder(media(1280, 720))) == [
        ("240p", 426, 240),
        ("360p", 640, 360),
        ("480p", 854, 480),
        ("720p", 1280, 720),
    ]


def test_portrait_rungs_are_chosen_by_the_short_side() -> None:
    planned = plan_ladder(media(1080, 1920))
    assert [r.name for r in planned] == ["240p", "360p", "480p", "720p", "1080p"]
    assert ("720p", 720, 1280) in sizes(planned)
    assert all(r.width < r.height for r in planned)


def test_odd_source_gets_even_sides_and_keeps_its_aspect_ratio() -> None:
    planned = plan_ladder(media(853, 481))
    assert [r.name for r in planned] == ["240p", "360p", "480p"]
    for rendition in planned:
        assert rendition.width % 2 == 0 and rendition.height % 2 == 0
        assert rendition.width / rendition.height == pytest.approx(853 / 481, rel=0.01)


def test_source_below_the_lowest_rung_is_kept_at_its_own_size() -> None:
    (only,) = plan_ladder(media(160, 120))
    assert (only.name, only.width, only.height) == ("120p", 160, 120)
    assert only.video_bitrate == LADDER[0].video_bitrate
    assert only.audio_bitrate == LADDER[0].audio_bitrate


def test_odd_tiny_source_rounds_down_rather_than_upscale() -> None:
    (only,) = plan_ladder(media(161, 121))
    assert (only.width, only.height) == (160, 120)


def test_requested_subset_is_honoured_in_ladder_order() -> None:
    planned = plan_ladder(media(1920, 1080), requested=["1080p", "360p"])
    assert [r.name for r in planned] == ["360p", "1080p"]


def test_requested_rungs_above_the_source_fall_back_to_the_source_size() -> None:
    (only,) = plan_ladder(media(1280, 720), requested=["1080p"])
    assert (only.name, only.width, only.height) == ("720p", 1280, 720)


def test_unknown_requested_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="4k"):
        plan_ladder(media(1920, 1080), requested=["720p", "4k"])
    with pytest.raises(ValueError):
        plan_ladder(media(1920, 1080), requested=[])


def test_audio_only_gets_one_audio_rendition_whatever_was_requested() -> None:
    assert plan_ladder(media(0, 0, video=False)) == [AUDIO_ONLY]
    assert plan_ladder(media(0, 0, video=False), requested=["720p"]) == [AUDIO_ONLY]
    (only,) = plan_ladder(media(0, 0, video=False))
    assert only.audio_only and only.name == "audio"
    assert (only.video_bitrate, only.bandwidth) == (0, only.audio_bitrate)


def test_neither_video_nor_audio_is_invalid() -> None:
    with pytest.raises(InvalidMedia):
        plan_ladder(media(0, 0, video=False, audio=False))


def test_video_renditions_are_not_audio_only() -> None:
    assert not any(r.audio_only for r in plan_ladder(media(1280, 720)))


@pytest.mark.parametrize(("mean", "expected"), [(27.4, 27.0), (29.6, 30.0), (12.2, 12.0), (59.6, 60.0)])
def test_variable_rate_source_gets_its_mean_rate_to_the_nearest_frame(mean: float, expected: float) -> None:
    planned = {r.name: r.fps for r in plan_ladder(media(1280, 720, fps=mean, vfr=True))}
    assert planned["720p"] == expected
    assert planned["240p"] <= 30


def test_sixty_fps_is_kept_from_720p_up_and_halved_below() -> None:
    fps = {r.name: r.fps for r in plan_ladder(media(1920, 1080, fps=60.0))}
    assert fps == {"240p": 30.0, "360p": 30.0, "480p": 30.0, "720p": 60.0, "1080p": 60.0}


@pytest.mark.parametrize(
    ("source_fps", "low", "high"),
    [
        (24.0, 24.0, 24.0),  # never above the source
        (25.0, 25.0, 25.0),
        (59.94, 29.97, 59.94),  # halved, not clamped, so the cadence stays even
        (50.0, 25.0, 50.0),
        (120.0, 30.0, 60.0),
        (0.0, 30.0, 30.0),  # unknown rate
    ],
)
def test_fps_caps(source_fps: float, low: float, high: float) -> None:
    planned = {r.name: r for r in plan_ladder(media(1920, 1080, fps=source_fps))}
    assert planned["480p"].fps == pytest.approx(low)
    assert planned["720p"].fps == pytest.approx(high)
    assert all(r.fps <= 60 for r in planned.values())


def test_ladder_is_ordered_with_rising_bitrates_and_peak_above_average() -> None:
    assert [r.name for r in LADDER] == ["240p", "360p", "480p", "720p", "1080p"]
    rates = [r.video_bitrate for r in LADDER]
    assert rates == sorted(rates)
    for rung in LADDER:
        assert rung.video_bitrate < rung.maxrate <= rung.bufsize
        assert rung.bandwidth == rung.maxrate + rung.audio_bitrate
