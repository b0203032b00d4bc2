"""The transcode stage's work: plan, run one ffmpeg, measure, write the master and stills;
the outputs go up to the attempt's prefix in the workspace while ffmpeg still writes them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.config import Settings
from services.errors import Canceled
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
from services.workspace import Workspace
from services.workspace.live import FolderUploader

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
    """Write master.m3u8, one folder per rendition, the poster and the storyboard into out_dir
    (a scratch folder). `info` is the source as the fetch stage probed it, within the probe
    limits.

    Returns what the stage records: the renditions with their measured bit rates, the segment
    format and the stills' file names.
    """
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
    measured = [measure_variant(out_dir / rendition.name) for rendition in renditions]
    master = write_master_playlist(renditions, info.has_audio, measured, fmp4=segment_format == "fmp4")
    (out_dir / MASTER_PLAYLIST).write_text(master)
    stills = _stills(out_dir, storyboard, info.duration)
    return {
        "renditions": [_rendition_output(r, m) for r, m in zip(renditions, measured, strict=True)],
        "segment_format": segment_format,
    } | stills


def transcode_job(
    source_key: str,
    workspace: Workspace,
    prefix: str,
    scratch: Path,
    settings: Settings,
    *,
    info: MediaInfo,
    requested: Sequence[str] | None,
    segment_format: SegmentFormat,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """The transcode stage: the source copied from the workspace into scratch (ffmpeg reads
    only files Conveyor hands it), the ladder written into scratch and mirrored to `prefix`
    (the attempt's own) as it is written. Half a ladder is never recorded: the stage's output,
    which names `prefix`, exists only once every file is up."""
    source = workspace.get_file(source_key, scratch / "source", should_stop=should_stop)
    out_dir = scratch / "hls"
    out_dir.mkdir()
    with FolderUploader(out_dir, workspace, prefix, should_stop=should_stop) as uploads:
        try:
            output = transcode_to_hls(
                source,
                out_dir,
                settings,
                info=info,
                requested=requested,
                segment_format=segment_format,
                on_progress=lambda percent: on_progress(min(percent, 99.0)),
                # A failed upload stops ffmpeg now: the attempt cannot succeed any more.
                should_stop=lambda: should_stop() or uploads.failed,
            )
        except Canceled:
            if uploads.error is not None:
                raise uploads.error from None
            raise
        uploads.finish()
    on_progress(100.0)
    return {"prefix": prefix} | output
