"""The transcode stage's work: plan, run one ffmpeg, measure, write the master and stills."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.config import Settings
from services.errors import DiskFull, TranscodeFailed
from services.ffmpeg import SegmentFormat, build_hls_command, run_ffmpeg
from services.ladder import Rendition, plan_ladder
from services.playlists import (
    MASTER_PLAYLIST,
    MEDIA_PLAYLIST,
    Bitrates,
    measure_bitrates,
    parse_media_playlist,
    write_master_playlist,
)
from services.probe import MediaInfo
from services.storyboard import (
    POSTER_FILE,
    SPRITE_FILE,
    VTT_FILE,
    StoryboardPlan,
    plan_storyboard,
    storyboard_vtt,
)

# How often the runner looks at the stop flag; a cancel must end ffmpeg within 2 s of the
# request, and the heartbeat that sets the flag already takes up to one of them.
STOP_POLL_SECONDS = 0.2


class SegmentsWritten:
    """Seconds of one rendition complete on disk (segment n is, once n + 1 exists).

    The transcode's progress until the storyboard is done: ffmpeg prints no ``-progress``
    report before every output has written its header, and the sprite's header comes only
    with its last thumbnail, near the end of the video.
    """

    def __init__(self, folder: Path, segment_format: SegmentFormat, segment_seconds: int) -> None:
        self.folder = folder
        self.suffix = ".m4s" if segment_format == "fmp4" else ".ts"
        self.segment_seconds = segment_seconds
        self.complete = 0

    def __call__(self) -> float:
        while (self.folder / f"seg_{self.complete + 1:05d}{self.suffix}").exists():
            self.complete += 1
        return float(self.complete * self.segment_seconds)


# Less room than this left on the output's filesystem, after an incomplete output, means the
# disk filled up (ffmpeg's HLS muxer says nothing when a write fails, and exits 0).
FULL_DISK_BYTES = 1024 * 1024


def check_complete(media_dirs: Sequence[Path]) -> None:
    """Every media playlist ffmpeg wrote must be whole: ENDLIST and at least one segment, each
    of which exists. Raised otherwise: `disk_full` (transient) when the disk is full, else
    `transcode_failed`."""
    for media_dir in media_dirs:
        playlist = media_dir / MEDIA_PLAYLIST
        text = playlist.read_text() if playlist.is_file() else ""
        segments = parse_media_playlist(text).segments
        if "#EXT-X-ENDLIST" in text and segments and all((media_dir / s.uri).is_file() for s in segments):
            continue
        usage = shutil.disk_usage(media_dir)
        if usage.free < FULL_DISK_BYTES:
            raise DiskFull(
                f"The disk filled up while ffmpeg wrote {media_dir.name}: {usage.free} bytes left."
            )
        raise TranscodeFailed(f"ffmpeg left {media_dir.name}/{MEDIA_PLAYLIST} incomplete.")


def measure_variant(media_dir: Path) -> Bitrates:
    """Peak and average bit rate of one written variant, from its segments' real sizes."""
    playlist = parse_media_playlist((media_dir / MEDIA_PLAYLIST).read_text())
    sizes = [(s.duration, (media_dir / s.uri).stat().st_size) for s in playlist.segments]
    return measure_bitrates(sizes, playlist.target_duration)


def storyboard_plan_for(info: MediaInfo, settings: Settings) -> StoryboardPlan | None:
    """The storyboard the transcode stage makes for this source (none for audio-only)."""
    if info.video is None:
        return None
    return plan_storyboard(
        info.duration,
        info.video.width,
        info.video.height,
        interval=settings.storyboard_interval_seconds,
        tile_width=settings.storyboard_tile_width,
        columns=settings.storyboard_columns,
    )


def _stills(out_dir: Path, plan: StoryboardPlan | None, duration: float) -> dict[str, Any]:
    # A poster instant past the last video frame (audio outlasting video) yields no poster;
    # the job still has its stream, so a missing still is recorded as absent, not an error.
    poster = POSTER_FILE if (out_dir / POSTER_FILE).is_file() else None
    if plan is None or not (out_dir / SPRITE_FILE).is_file():
        return {"poster": poster, "storyboard": None}
    (out_dir / VTT_FILE).write_text(storyboard_vtt(plan, duration))
    return {"poster": poster, "storyboard": {"vtt": VTT_FILE, "sprite": SPRITE_FILE} | asdict(plan)}


def _rendition_output(rendition: Rendition, measured: Bitrates) -> dict[str, Any]:
    return asdict(rendition) | {"bandwidth": measured.peak, "average_bandwidth": measured.average}


def transcode_to_hls(
    source: Path,
    out_dir: Path,
    settings: Settings,
    *,
    info: MediaInfo,
    requested: Sequence[str] | None,
    segment_format: SegmentFormat = "ts",
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """Write master.m3u8, one folder per rendition, the poster and the storyboard into out_dir.
    `info` is the source as the fetch stage probed it, within the probe limits.

    Returns what the stage records: the renditions with their measured bit rates, the segment
    format and the stills' file names. On any way out but success out_dir is removed: half a
    ladder must never be published, and a canceled job should not keep its disk.
    """
    try:
        # ffmpeg's HLS muxer makes the rendition folders, but the image muxer makes none.
        out_dir.mkdir(parents=True, exist_ok=True)
        renditions = plan_ladder(info, requested)
        storyboard = storyboard_plan_for(info, settings)
        args = build_hls_command(
            source,
            info,
            renditions,
            out_dir,
            segment_seconds=settings.segment_seconds,
            preset=settings.x264_preset,
            threads=settings.ffmpeg_threads,
            segment_format=segment_format,
            storyboard=storyboard,
        )
        run_ffmpeg(
            args,
            duration=info.duration,
            on_progress=on_progress,
            should_stop=should_stop,
            timeout=settings.time_limits("transcode")[0],
            memory_limit_bytes=settings.ffmpeg_memory_limit_bytes,
            poll_seconds=STOP_POLL_SECONDS,
            written_seconds=SegmentsWritten(
                out_dir / renditions[0].name, segment_format, settings.segment_seconds
            ),
        )
        check_complete([out_dir / rendition.name for rendition in renditions])
        measured = [measure_variant(out_dir / rendition.name) for rendition in renditions]
        master = write_master_playlist(renditions, info.has_audio, measured, fmp4=segment_format == "fmp4")
        (out_dir / MASTER_PLAYLIST).write_text(master)
        stills = _stills(out_dir, storyboard, info.duration)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return {
        "renditions": [_rendition_output(r, m) for r, m in zip(renditions, measured, strict=True)],
        "segment_format": segment_format,
    } | stills
