"""Storyboard planning and its WebVTT: pure."""

from __future__ import annotations

import ffmpeg as ffmpeg_python
import pytest

from services.media.storyboard import (
    MAX_TILES,
    plan_storyboard,
    poster_time,
    storyboard_steps,
    storyboard_vtt,
)


def test_thumbnails_every_interval_in_rows_of_columns() -> None:
    plan = plan_storyboard(62.0, 1920, 1080, interval=5.0, tile_width=160, columns=10)
    assert (plan.count, plan.columns, plan.rows) == (13, 10, 2)
    assert (plan.tile_width, plan.tile_height) == (160, 90)
    assert plan.region(0) == (0, 0, 160, 90)
    assert plan.region(12) == (320, 90, 160, 90)


def test_short_clip_has_one_thumbnail_and_a_narrow_sheet() -> None:
    plan = plan_storyboard(0.5, 320, 240, interval=5.0, tile_width=160, columns=10)
    assert (plan.count, plan.columns, plan.rows, plan.tile_height) == (1, 1, 1, 120)


def test_portrait_tiles_keep_the_aspect_ratio_with_even_sides() -> None:
    plan = plan_storyboard(10.0, 1080, 1920, interval=5.0, tile_width=160, columns=10)
    assert (plan.tile_width, plan.tile_height) == (160, 284)


def test_long_video_widens_the_interval_to_keep_one_bounded_sheet() -> None:
    plan = plan_storyboard(6 * 3600.0, 1280, 720, interval=5.0, tile_width=160, columns=10)
    assert plan.count <= MAX_TILES
    assert plan.interval == 54.0
    assert plan.count * plan.interval >= 6 * 3600


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        plan_storyboard(0.0, 320, 240, interval=5.0, tile_width=160, columns=10)


def test_vtt_maps_each_interval_to_its_region() -> None:
    plan = plan_storyboard(12.0, 1280, 720, interval=5.0, tile_width=160, columns=2)
    text = storyboard_vtt(plan, 12.0)
    assert text.startswith("WEBVTT\n\n")
    blocks = [block.splitlines() for block in text.strip().split("\n\n")[1:]]
    assert blocks == [
        ["00:00:00.000 --> 00:00:05.000", "storyboard.jpg#xywh=0,0,160,90"],
        ["00:00:05.000 --> 00:00:10.000", "storyboard.jpg#xywh=160,0,160,90"],
        ["00:00:10.000 --> 00:00:12.000", "storyboard.jpg#xywh=0,90,160,90"],
    ]


def test_vtt_timestamps_pass_an_hour() -> None:
    plan = plan_storyboard(3725.0, 1280, 720, interval=60.0, tile_width=160, columns=10)
    assert "01:02:00.000 --> 01:02:05.000" in storyboard_vtt(plan, 3725.0)


def test_filter_selects_no_more_than_planned() -> None:
    plan = plan_storyboard(12.0, 1280, 720, interval=5.0, tile_width=160, columns=10)
    sprite = storyboard_steps(ffmpeg_python.input("in.mp4")["v:0"], plan)
    graph = ffmpeg_python.output(sprite, "out.jpg").get_args()[3]
    assert graph == (
        "[0:v:0]select=lt(selected_n\\,3)*gte(t\\,selected_n*5)[s0];[s0]scale=160:90[s1];"
        "[s1]setsar=1[s2];[s2]tile=3x1:nb_frames=3[s3]"
    )


def test_poster_is_a_tenth_in_at_most_ten_seconds() -> None:
    assert poster_time(4.0) == pytest.approx(0.4)
    assert poster_time(3600.0) == 10.0
