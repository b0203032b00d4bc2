from __future__ import annotations

import pytest

from services.errors import InvalidMedia
from services.media.ladder import (
    LADDER,
    Rendition,
    fps_factor,
    language_of,
    plan_audio,
    plan_ladder,
    plan_subtitles,
    source_video_bitrate,
)
from services.media.probe import AudioStream, MediaInfo, SubtitleStream, VideoStream


def media(
    width: int,
    height: int,
    fps: float = 30.0,
    *,
    video: bool = True,
    audio: bool = True,
    vfr: bool = False,
    bit_rate: int = 0,
    video_bit_rate: int = 0,
    tracks: tuple[AudioStream, ...] | None = None,
    subtitles: tuple[SubtitleStream, ...] = (),
) -> MediaInfo:
    sound = (tracks or (AudioStream("aac", 2, 48_000, index=1),)) if audio else ()
    return MediaInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration=10.0,
        size_bytes=1_000_000,
        bit_rate=bit_rate,
        video=VideoStream("h264", width, height, fps, "yuv420p", 0, vfr, bit_rate=video_bit_rate)
        if video
        else None,
        audio=sound[0] if sound else None,
        stream_count=len(sound) + (1 if video else 0),
        audio_tracks=sound,
        subtitles=subtitles,
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


def test_audio_only_gets_audio_renditions_only_whatever_was_requested() -> None:
    info = media(0, 0, video=False)
    assert plan_ladder(info) == []
    assert plan_ladder(info, requested=["720p"]) == []
    (only,) = plan_audio(info)
    assert (only.name, only.bitrate, only.sample_rate, only.channels, only.default) == (
        "audio-0",
        128_000,
        48_000,
        2,
        True,
    )


def test_neither_video_nor_audio_is_invalid() -> None:
    with pytest.raises(InvalidMedia):
        plan_ladder(media(0, 0, video=False, audio=False))


def test_every_video_rendition_has_a_picture() -> None:
    assert all(r.width > 0 and r.height > 0 for r in plan_ladder(media(1280, 720)))


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


def test_anamorphic_sources_get_square_pixel_renditions_at_the_display_aspect() -> None:
    # The probe gives the display size: PAL 720x576 at 64:45 is 1024x576, HDV 1440x1080 at 4:3 1920x1080.
    pal = plan_ladder(media(1024, 576))
    assert [(r.name, r.width, r.height) for r in pal] == [
        ("240p", 426, 240),
        ("360p", 640, 360),
        ("480p", 854, 480),
    ]
    hdv = plan_ladder(media(1920, 1080), requested=["1080p"])
    assert [(r.width, r.height) for r in hdv] == [(1920, 1080)]


def test_sixty_fps_gets_about_one_and_a_half_times_the_bits_of_thirty() -> None:
    thirty = {r.name: r.video_bitrate for r in plan_ladder(media(1280, 720, fps=30.0))}
    sixty = {r.name: r.video_bitrate for r in plan_ladder(media(1280, 720, fps=60.0))}
    assert sixty["720p"] == pytest.approx(1.5 * thirty["720p"], rel=0.01)
    assert sixty["480p"] == thirty["480p"]  # 480p is delivered at 30 fps either way
    assert fps_factor(24.0) < 1.0 < fps_factor(50.0) < fps_factor(60.0) == pytest.approx(1.5, rel=0.01)


def test_no_rung_asks_for_more_than_the_source_holds_and_duplicates_are_dropped() -> None:
    # A 250 kb/s slide: every rung would be capped at 250 kb/s, so only the largest is kept.
    planned = plan_ladder(media(1280, 720, video_bit_rate=250_000))
    assert [(r.name, r.video_bitrate) for r in planned] == [("720p", 250_000)]
    assert all(r.maxrate <= 1.5 * 250_000 for r in planned)
    # 1 Mb/s: 240p and 360p are below it; 480p and 720p both capped, so 480p goes.
    planned = plan_ladder(media(1280, 720, video_bit_rate=1_000_000))
    assert [(r.name, r.video_bitrate) for r in planned] == [
        ("240p", 400_000),
        ("360p", 800_000),
        ("720p", 1_000_000),
    ]


def test_the_source_bitrate_is_the_streams_else_the_files_less_its_sound() -> None:
    assert source_video_bitrate(media(1280, 720, video_bit_rate=900_000, bit_rate=5_000_000)) == 900_000
    assert source_video_bitrate(media(1280, 720, bit_rate=1_128_000)) == 1_000_000
    assert source_video_bitrate(media(1280, 720)) == 0  # unknown: nothing is capped


def test_other_codecs_get_the_same_sizes_at_fewer_bits() -> None:
    planned = plan_ladder(media(1280, 720), codecs=("h264", "hevc", "av1"), rate_control="capped_crf")
    by_name = {r.name: r for r in planned}
    assert {r.codec for r in planned} == {"h264", "hevc", "av1"}
    assert by_name["720p-hevc"].video_bitrate < by_name["720p"].video_bitrate
    assert by_name["720p-av1"].video_bitrate < by_name["720p-hevc"].video_bitrate
    assert (by_name["720p"].crf, by_name["720p-hevc"].crf, by_name["720p-av1"].crf) == (23, 25, None)
    assert all(r.crf is None for r in plan_ladder(media(1280, 720), rate_control="bitrate"))


def test_the_default_sound_track_comes_first_and_each_other_language_once() -> None:
    tracks = (
        AudioStream("aac", 2, 44_100, index=1, language="eng"),
        AudioStream("ac3", 6, 48_000, index=2, language="fre", default=True),
        AudioStream("aac", 2, 48_000, index=3, language="eng", title="Commentary"),
        AudioStream("aac", 2, 48_000, index=4),
        AudioStream("aac", 2, 48_000, index=5, language="spa", title="Español"),
    )
    info = media(1280, 720, tracks=tracks)
    info = MediaInfo(**{**info.__dict__, "audio": tracks[1]})
    planned = plan_audio(info)
    assert [(a.name, a.stream_index, a.language, a.title, a.default) for a in planned] == [
        ("audio-0", 2, "fr", "French", True),
        ("audio-1", 1, "en", "English", False),
        ("audio-2", 5, "es", "Español", False),
    ]


def test_languages_become_bcp47_tags() -> None:
    assert language_of("eng") == ("en", "English")
    assert language_of("fra") == ("fr", "French")
    assert language_of("und") == ("", "")
    assert language_of("tlh") == ("tlh", "tlh")


def test_text_subtitle_tracks_are_planned_in_file_order() -> None:
    subtitles = (
        SubtitleStream("mov_text", 2, "eng", default=True),
        SubtitleStream("subrip", 3, "", "Signs", forced=True),
    )
    planned = plan_subtitles(media(1280, 720, subtitles=subtitles))
    assert [(s.name, s.stream_index, s.language, s.title, s.default, s.forced) for s in planned] == [
        ("text-0", 2, "en", "English", True, False),
        ("text-1", 3, "", "Signs", False, True),
    ]
    assert plan_subtitles(media(0, 0, video=False, subtitles=subtitles)) == []
