"""The stitch: once every part of a transcode has succeeded, one stream of them.

No media byte is re-encoded or copied: every part numbered its segments on from the part
before and kept the source's clock, so each rendition's media playlist is the parts' playlists
joined, and the published stream is the stitch's prefix (playlists, master, stills) over the
parts' `hls/` folders (publishing.transcoded_folder). The master and its audio group, the
subtitle renditions, the DASH manifest, the poster and the storyboard sprite (tiled from the
parts' thumbnails) are written here, exactly as a transcode of one part writes them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.config import Settings
from services.contract.parts import SOUND, VIDEO
from services.errors import TranscodeFailed
from services.media.confine import confine
from services.media.ffmpeg import PART_TIMESTAMP_OFFSET_SECONDS, subtitle_source_path
from services.media.hls import TranscodePlan, ladder_output
from services.media.playlists import (
    MEDIA_PLAYLIST,
    Bitrates,
    join_media_playlists,
    measure_bitrates,
    parse_media_playlist,
)
from services.media.probe import MediaInfo
from services.media.quality import merged_receipts
from services.media.storyboard import (
    POSTER_FILE,
    SPRITE_FILE,
    THUMBNAILS_DIR,
    build_tile_command,
    thumbnail_name,
)
from services.workspace import Workspace
from services.workspace.live import FolderUploader

DOWNLOAD_CONCURRENCY = 8
TILE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class FinishedPart:
    """A part as the stitch reads it: where it is in the stream, and its output."""

    index: int
    kind: str
    output: dict[str, Any]


def _join(out_dir: Path, name: str, parts: Sequence[FinishedPart]) -> Bitrates:
    """Write one rendition's media playlist of its parts'; its bit rates, from the parts'
    segment sizes."""
    text = join_media_playlists([part.output["renditions"][name]["playlist"] for part in parts])
    (out_dir / name).mkdir(parents=True, exist_ok=True)
    (out_dir / name / MEDIA_PLAYLIST).write_text(text)
    playlist = parse_media_playlist(text)
    sizes = [size for part in parts for size in part.output["renditions"][name]["sizes"]]
    if len(sizes) != len(playlist.segments):
        raise TranscodeFailed(
            f"The parts of {name} list {len(playlist.segments)} segments but measured {len(sizes)}."
        )
    return measure_bitrates(
        [(s.duration, size) for s, size in zip(playlist.segments, sizes, strict=True)],
        playlist.target_duration,
    )


def _fetch(workspace: Workspace, wanted: dict[str, Path], should_stop: Callable[[], bool]) -> None:
    def get(item: tuple[str, Path]) -> None:
        key, dest = item
        dest.parent.mkdir(parents=True, exist_ok=True)
        workspace.get_file(key, dest, should_stop=should_stop)

    with ThreadPoolExecutor(DOWNLOAD_CONCURRENCY, thread_name_prefix="stitch-inputs") as pool:
        list(pool.map(get, wanted.items()))


def _storyboard(
    workspace: Workspace,
    out_dir: Path,
    scratch: Path,
    plan: TranscodePlan,
    video: Sequence[FinishedPart],
    settings: Settings,
    should_stop: Callable[[], bool],
) -> None:
    """The sprite of the parts' thumbnails. A thumbnail no part could take (no frame between its
    instant and its part's end) shows its neighbour's picture; with none at all, no sprite."""
    storyboard = plan.storyboard
    if storyboard is None:
        return
    folder = scratch / THUMBNAILS_DIR
    wanted = {
        f"{part.output['extras']}{THUMBNAILS_DIR}/{thumbnail_name(index)}": folder / thumbnail_name(index)
        for part in video
        for index in part.output["thumbnails"]
    }
    if not wanted:
        return
    _fetch(workspace, wanted, should_stop)
    have = sorted(int(path.stem.rpartition("_")[2]) for path in folder.glob("thumb_*.jpg"))
    for index in range(storyboard.count):
        if not (folder / thumbnail_name(index)).is_file():
            nearest = min(have, key=lambda present: abs(present - index))
            shutil.copyfile(folder / thumbnail_name(nearest), folder / thumbnail_name(index))
    done = subprocess.run(
        build_tile_command(settings.ffmpeg_path, folder, storyboard, out_dir / SPRITE_FILE),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TILE_TIMEOUT_SECONDS,
        check=False,
        preexec_fn=confine(settings.ffmpeg_memory_limit_bytes),
    )
    if done.returncode != 0:
        raise TranscodeFailed(f"The storyboard's thumbnails could not be tiled: {done.stderr.strip()[-500:]}")


def subtitle_clock(info: MediaInfo, plan: TranscodePlan, first: FinishedPart) -> float:
    """Where LOCAL 00:00 of a subtitle track falls on the segments' clock: its cues keep the
    source's clock (copyts), which the parts shifted by the same offset as every frame."""
    if plan.segment_format == "fmp4" or first.output.get("first_pts") is None:
        return float(PART_TIMESTAMP_OFFSET_SECONDS)
    origin = info.video.start_time if info.video is not None else info.start_time
    return float(first.output["first_pts"]) - origin


def stitch_parts(
    workspace: Workspace,
    prefix: str,
    scratch: Path,
    settings: Settings,
    *,
    info: MediaInfo,
    plan: TranscodePlan,
    parts: Sequence[FinishedPart],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """Write the stitched playlists, master, subtitles, DASH manifest and stills under `prefix`
    (this attempt's own); the stage's output names it and, after it, the parts' folders."""
    video = sorted((p for p in parts if p.kind == VIDEO), key=lambda p: p.index)
    sound = next((p for p in parts if p.kind == SOUND), None)
    if not video or (sound is None and (plan.audio or plan.subtitles)):
        raise TranscodeFailed("The transcode's parts are incomplete; nothing to stitch.")
    out_dir = scratch / "hls"
    out_dir.mkdir()
    measured = [_join(out_dir, r.name, video) for r in plan.renditions]
    audio_measured = [_join(out_dir, a.name, [sound]) for a in plan.audio] if sound else []
    extras: dict[str, Path] = {}
    if sound is not None:
        extras |= {
            f"{sound.output['extras']}{s.name}/{subtitle_source_path(Path(), s).name}": subtitle_source_path(
                out_dir, s
            )
            for s in plan.subtitles
        }
    holder = next((p for p in video if p.output.get("poster")), None)
    if holder is not None:
        extras[f"{holder.output['extras']}{POSTER_FILE}"] = out_dir / POSTER_FILE
    _fetch(workspace, extras, should_stop)
    _storyboard(workspace, out_dir, scratch, plan, video, settings, should_stop)
    receipts = merged_receipts([p.output.get("quality") for p in video], len(plan.renditions))
    origin = info.video.start_time if info.video is not None else info.start_time
    output = ladder_output(
        out_dir,
        info,
        plan,
        settings,
        measured,
        audio_measured,
        mpegts_start=subtitle_clock(info, plan, video[0]) if plan.subtitles else None,
        receipts=receipts,
        clock_start=origin + PART_TIMESTAMP_OFFSET_SECONDS if plan.segment_format == "fmp4" else 0.0,
    )
    with FolderUploader(out_dir, workspace, prefix, should_stop=should_stop) as uploads:
        uploads.finish()
    folders = [p.output["hls"] for p in video] + ([sound.output["hls"]] if sound else [])
    return {"prefix": prefix, "parts": folders} | output
