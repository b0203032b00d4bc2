"""The transcode stage's work: probe, plan the ladder, run one ffmpeg, write the master."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.config import Settings
from services.ffmpeg import build_hls_command, run_ffmpeg, write_master_playlist
from services.ladder import plan_ladder
from services.probe import probe


def transcode_to_hls(
    source: Path,
    out_dir: Path,
    settings: Settings,
    *,
    requested: Sequence[str] | None,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> list[dict[str, Any]]:
    """Write master.m3u8 and one folder per rendition into out_dir; returns the renditions."""
    info = probe(source)
    renditions = plan_ladder(info, requested)
    args = build_hls_command(
        source,
        info,
        renditions,
        out_dir,
        segment_seconds=settings.segment_seconds,
        preset=settings.x264_preset,
        threads=settings.ffmpeg_threads,
    )
    run_ffmpeg(
        args,
        duration=info.duration,
        on_progress=on_progress,
        should_stop=should_stop,
        timeout=settings.time_limits("transcode")[0],
        memory_limit_bytes=settings.ffmpeg_memory_limit_bytes,
    )
    (out_dir / "master.m3u8").write_text(write_master_playlist(renditions, info.has_audio))
    return [asdict(rendition) | {"bandwidth": rendition.bandwidth} for rendition in renditions]
