"""The poster image and the seek-preview storyboard: pure planning, filter chains and WebVTT.

Both come out of the transcode's one ffmpeg process (extra branches of its ``split``), so
they cost no second decode; this module only decides what those branches do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python

POSTER_FILE = "poster.jpg"
SPRITE_FILE = "storyboard.jpg"
VTT_FILE = "storyboard.vtt"
# A part of a transcode writes its thumbnails one file each, numbered as in the whole sheet.
THUMBNAILS_DIR = "thumbs"
THUMBNAIL_PATTERN = "thumb_%05d.jpg"
# mjpeg quality scale (2 best … 31 worst): 3 keeps a poster sharp at a fraction of PNG's size.
JPEG_QUALITY = 3
# One sprite sheet, so a player fetches one image for every preview; past this many tiles
# the interval widens instead (400 tiles of 160 px: a 1600 px wide sheet of 40 rows).
MAX_TILES = 400
# A tenth of the way in passes fades from black and slates; capped so a long video's poster
# still shows its opening.
POSTER_FRACTION = 0.1
POSTER_MAX_SECONDS = 10.0


@dataclass(frozen=True)
class StoryboardPlan:
    interval: float  # seconds between thumbnails
    count: int
    columns: int
    rows: int
    tile_width: int
    tile_height: int

    def region(self, index: int) -> tuple[int, int, int, int]:
        """x, y, w, h of thumbnail ``index`` in the sprite sheet."""
        row, column = divmod(index, self.columns)
        return column * self.tile_width, row * self.tile_height, self.tile_width, self.tile_height


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def plan_storyboard(
    duration: float, width: int, height: int, *, interval: float, tile_width: int, columns: int
) -> StoryboardPlan:
    """Thumbnails every ``interval`` seconds from 0, ``tile_width`` wide with the picture's aspect."""
    if duration <= 0 or width <= 0 or height <= 0 or interval <= 0 or tile_width <= 0 or columns <= 0:
        raise ValueError("duration, picture size, interval, tile width and columns must be positive")
    if math.ceil(duration / interval) > MAX_TILES:
        interval = float(math.ceil(duration / MAX_TILES))
    count = max(1, math.ceil(duration / interval))
    used_columns = min(columns, count)
    return StoryboardPlan(
        interval=interval,
        count=count,
        columns=used_columns,
        rows=math.ceil(count / used_columns),
        tile_width=_even(tile_width),
        tile_height=_even(tile_width * height / width),
    )


def poster_time(duration: float) -> float:
    return min(duration * POSTER_FRACTION, POSTER_MAX_SECONDS)


def poster_steps(stream: Any, at: float, width: int, height: int) -> Any:
    """ffmpeg-python steps from the picture to the poster frame."""
    # trim drops everything before the poster's instant, select keeps the first frame after.
    return (
        stream.filter("trim", start=f"{at:.3f}")
        .filter("select", "eq(n,0)")
        .filter("scale", width, height)
        .filter("setsar", 1)
    )


def storyboard_steps(stream: Any, plan: StoryboardPlan) -> Any:
    """ffmpeg-python steps from the picture to the one sprite sheet."""
    # The first frame at or after each multiple of the interval, never more than planned, so
    # the sheet and the WebVTT agree; tile lays them out row by row and emits one sheet.
    return (
        stream.filter("select", f"lt(selected_n,{plan.count})*gte(t,selected_n*{plan.interval:g})")
        .filter("scale", plan.tile_width, plan.tile_height)
        .filter("setsar", 1)
        .filter("tile", f"{plan.columns}x{plan.rows}", nb_frames=plan.count)
    )


@dataclass(frozen=True)
class Thumbnails:
    """The storyboard thumbnails one part of a transcode takes: indices first … first + count - 1."""

    first: int
    count: int
    at: float  # the first one's instant on the source's clock


def thumbnail_steps(stream: Any, plan: StoryboardPlan, thumbnails: Thumbnails) -> Any:
    """ffmpeg-python steps from one part's picture to its storyboard thumbnails, one image each,
    tiled into the sprite once every part is done."""
    return (
        stream.filter(
            "select",
            f"lt(selected_n,{thumbnails.count})*gte(t,{thumbnails.at:.6f}+selected_n*{plan.interval:g})",
        )
        .filter("scale", plan.tile_width, plan.tile_height)
        .filter("setsar", 1)
    )


def thumbnail_name(index: int) -> str:
    return THUMBNAIL_PATTERN % index


def build_tile_command(ffmpeg: str, folder: Path, plan: StoryboardPlan, dest: Path) -> list[str]:
    """The sprite sheet of the `plan.count` thumbnails in `folder` (thumb_00000.jpg …), laid
    out as a transcode of one part lays them."""
    thumbnails = ffmpeg_python.input(
        str(folder / THUMBNAIL_PATTERN), f="image2", start_number=0, protocol_whitelist="file"
    )
    sheet = thumbnails.filter("tile", f"{plan.columns}x{plan.rows}", nb_frames=plan.count)
    output = ffmpeg_python.output(
        sheet, str(dest), f="image2", update=1, **{"frames:v": 1, "c:v": "mjpeg", "q:v": JPEG_QUALITY}
    )
    args: list[str] = (
        output.global_args("-nostdin", "-hide_banner", "-loglevel", "error")
        .overwrite_output()
        .compile(cmd=ffmpeg)
    )
    return args


def _timestamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}.{millis % 1000:03d}"


def storyboard_vtt(plan: StoryboardPlan, duration: float, sprite: str = SPRITE_FILE) -> str:
    """WebVTT mapping each interval to its region of the sprite (``#xywh=``), as players read it."""
    cues = ["WEBVTT", ""]
    for index in range(plan.count):
        start = index * plan.interval
        end = min((index + 1) * plan.interval, duration)
        x, y, w, h = plan.region(index)
        cues += [
            f"{_timestamp(start)} --> {_timestamp(max(end, start + 0.001))}",
            f"{sprite}#xywh={x},{y},{w},{h}",
            "",
        ]
    return "\n".join(cues)
