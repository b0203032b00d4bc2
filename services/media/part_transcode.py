"""One part of a transcode, on whichever video host took it: its window of the source encoded
into every video rendition (or, for the sound part, every sound and subtitle track of the
whole source), its segments mirrored to the part attempt's own prefix while ffmpeg writes
them. What the stitch needs from it (media playlists, segment sizes, stills) is its output.

A part's prefix holds `hls/` (published as they are, beside the stitch's playlists) and
`extras/` (the poster, storyboard thumbnails and subtitle tracks the stitch finishes, never
published).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.captions import first_segment_start
from services.config import Settings
from services.contract.parts import VIDEO, PartPlan
from services.errors import Canceled
from services.media.ffmpeg import build_hls_command, run_ffmpeg, subtitle_source_path
from services.media.hls import (
    STOP_POLL_SECONDS,
    SegmentsWritten,
    TranscodePlan,
    check_complete,
    encoders_for,
    quality_scores,
    quality_windows,
)
from services.media.parts import PartWindow, part_window
from services.media.playlists import MEDIA_PLAYLIST, parse_media_playlist
from services.media.probe import MediaInfo
from services.media.quality import windows_within
from services.media.storyboard import POSTER_FILE, THUMBNAILS_DIR
from services.workspace import Workspace
from services.workspace.live import FolderUploader

HLS, EXTRAS = "hls/", "extras/"


def _playlists(out_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Each rendition's media playlist as written, and its segments' sizes (for bit rates)."""
    written = {}
    for name in names:
        text = (out_dir / name / MEDIA_PLAYLIST).read_text()
        sizes = [(out_dir / name / s.uri).stat().st_size for s in parse_media_playlist(text).segments]
        written[name] = {"playlist": text, "sizes": sizes}
    return written


def _thumbnails_written(extras: Path) -> list[int]:
    folder = extras / THUMBNAILS_DIR
    return sorted(int(path.stem.rpartition("_")[2]) for path in folder.glob("thumb_*.jpg"))


def encode_part(
    source: Path,
    out_dir: Path,
    extras: Path,
    settings: Settings,
    *,
    info: MediaInfo,
    plan: TranscodePlan,
    part: PartPlan,
    timeout: float,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """Run one part's ffmpeg into out_dir (HLS) and extras; what the stitch needs of it."""
    window: PartWindow = part_window(part, info, plan.storyboard)
    video = part.kind == VIDEO
    renditions = plan.renditions if video else ()
    audio, subtitles = ((), ()) if video else (plan.audio, plan.subtitles)
    (extras / THUMBNAILS_DIR).mkdir(parents=True, exist_ok=True)
    for subtitle in subtitles:
        (extras / subtitle.name).mkdir(exist_ok=True)
    args = build_hls_command(
        source,
        info,
        renditions,
        out_dir,
        segment_seconds=settings.segment_seconds,
        audio=audio,
        subtitles=subtitles,
        picture=plan.picture,
        encoders=encoders_for(settings),
        segment_format=plan.segment_format,
        storyboard=plan.storyboard if video else None,
        window=window,
        extras_dir=extras,
    )
    names = [r.name for r in renditions] if video else [a.name for a in audio]
    run_ffmpeg(
        args,
        duration=part.span_seconds,
        on_progress=on_progress,
        should_stop=should_stop,
        timeout=timeout,
        memory_limit_bytes=settings.ffmpeg_memory_limit_bytes,
        poll_seconds=STOP_POLL_SECONDS,
        written_seconds=None
        if video
        else SegmentsWritten(
            out_dir / names[0], plan.segment_format, settings.segment_seconds, part.first_segment
        ),
        # ffmpeg counts the frames of the first rendition it writes.
        seconds_per_frame=1.0 / renditions[0].fps if video else None,
    )
    check_complete([out_dir / name for name in names])
    output: dict[str, Any] = {
        "renditions": _playlists(out_dir, names),
        "poster": (extras / POSTER_FILE).is_file(),
        "thumbnails": _thumbnails_written(extras),
        "subtitles": [s.name for s in subtitles if subtitle_source_path(extras, s).is_file()],
        # Where the stream's first segment starts on the MPEG-TS clock, which subtitles map to.
        "first_pts": first_segment_start(out_dir / names[0] / MEDIA_PLAYLIST)
        if video and part.index == 0
        else None,
        "quality": None,
    }
    windows = windows_within(
        quality_windows(info, renditions, settings), part.start_seconds, part.end_seconds
    )
    if video and windows and settings.quality_receipts and plan.picture is not None:
        # The receipts' windows that fall in this part; the stitch pools every part's scores.
        scores = quality_scores(
            source,
            out_dir,
            info,
            plan.picture,
            renditions,
            settings,
            should_stop,
            windows=windows,
            source_offset=part.start_seconds,
        )
        output["quality"] = [None if score is None else asdict(score) for score in scores]
    on_progress(100.0)
    return output


def transcode_part(
    source: Path,
    workspace: Workspace,
    prefix: str,
    scratch: Path,
    settings: Settings,
    *,
    info: MediaInfo,
    plan: TranscodePlan,
    part: PartPlan,
    timeout: float,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """One part, its HLS mirrored to `prefix`hls/ while ffmpeg writes it, its extras put under
    `prefix`extras/ once it is done; the part's output names both."""
    out_dir, extras = scratch / "hls", scratch / "extras"
    out_dir.mkdir()
    with FolderUploader(out_dir, workspace, prefix + HLS, should_stop=should_stop) as uploads:
        try:
            output = encode_part(
                source,
                out_dir,
                extras,
                settings,
                info=info,
                plan=plan,
                part=part,
                timeout=timeout,
                on_progress=lambda percent: on_progress(min(percent, 99.0)),
                should_stop=lambda: should_stop() or uploads.failed,
            )
        except Canceled:
            if uploads.error is not None:
                raise uploads.error from None
            raise
        uploads.finish()
    for path in sorted(p for p in extras.rglob("*") if p.is_file()):
        workspace.put_file(
            path, prefix + EXTRAS + path.relative_to(extras).as_posix(), should_stop=should_stop
        )
    on_progress(100.0)
    return {"hls": prefix + HLS, "extras": prefix + EXTRAS} | output
