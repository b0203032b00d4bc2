"""Choosing the analysis backend for a job: the seam between the analyze stage and the analyzers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.analysis import analyze_local
from services.captions import first_segment_start, language_tag, make_cues, publish_captions
from services.config import Settings
from services.errors import AnalysisFailed
from services.gemini import analyze_video, pick_rendition, rendition_to_mp4
from services.google_ai import gemini_client
from services.probe import MediaInfo
from services.storage import Delivery

BACKENDS = ("local", "gemini")


@dataclass(frozen=True)
class AnalysisInputs:
    """What earlier stages left for the analysis."""

    source: Path  # the original, in the workspace
    info: MediaInfo  # the original as the fetch stage probed it
    hls_dir: Path  # the transcode's output (master.m3u8, <rendition>/index.m3u8)
    renditions: list[dict[str, Any]]
    prefix: str  # where the upload stage published the stream
    work_dir: Path  # the analyze stage's own folder, empty at the start of each run
    audio: list[dict[str, Any]] = field(default_factory=list)  # the transcode's audio renditions


def smallest_picture(hls_dir: Path, renditions: Sequence[dict[str, Any]]) -> Path | None:
    """The media playlist of the smallest rendition with a picture; None for sound only."""
    # H.264 where there is a choice: every ffmpeg decodes it fastest.
    pictures = [rendition for rendition in renditions if rendition["width"] > 0]
    pictures = [r for r in pictures if r.get("codec", "h264") == "h264"] or pictures
    if not pictures:
        return None
    smallest = min(pictures, key=lambda rendition: rendition["width"] * rendition["height"])
    return hls_dir / str(smallest["name"]) / "index.m3u8"


def analyze_job(
    inputs: AnalysisInputs,
    options: dict[str, Any],
    settings: Settings,
    delivery: Delivery,
    *,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """The analyze stage's output: {"analysis": …, "captions": [...]}."""
    # Local unless the job asked (and its key was entitled) to send the video to Google.
    backend = options.get("backend") or "local"
    if backend == "local":
        analysis = analyze_local(
            inputs.source,
            inputs.info,
            pictures=smallest_picture(inputs.hls_dir, inputs.renditions),
            timeout=settings.time_limits("analyze")[0],
            should_stop=should_stop,
            memory_limit_bytes=settings.ffmpeg_memory_limit_bytes,
        )
        return {"analysis": analysis, "captions": []}
    if backend == "gemini":
        if not settings.google_api_key:
            raise AnalysisFailed("The gemini backend needs GOOGLE_API_KEY.", code="backend_unavailable")
        return _analyze_with_gemini(
            inputs,
            options.get("prompt"),
            settings,
            delivery,
            on_progress=on_progress,
            should_stop=should_stop,
        )
    raise AnalysisFailed(f"Unknown analysis backend {backend!r}.", code="invalid_options")


def _analyze_with_gemini(
    inputs: AnalysisInputs,
    prompt: str | None,
    settings: Settings,
    delivery: Delivery,
    *,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    rendition = pick_rendition(inputs.renditions)
    sound = inputs.audio[0] if inputs.audio else None
    chosen = [r for r in (rendition, sound) if r is not None]
    if not chosen:
        raise AnalysisFailed("The transcode left nothing to analyze.")
    playlists = [inputs.hls_dir / r["name"] / "index.m3u8" for r in chosen]
    media_playlist = playlists[0]
    duration = inputs.info.duration
    video = rendition_to_mp4(
        playlists,
        inputs.work_dir / f"{chosen[0]['name']}.mp4",
        duration=duration,
        settings=settings,
        on_progress=lambda percent: on_progress(0.2 * percent),
        should_stop=should_stop,
    )
    try:
        answer = analyze_video(
            gemini_client(settings),
            video,
            prompt=prompt,
            settings=settings,
            on_progress=on_progress,
            should_stop=should_stop,
        )
    finally:
        video.unlink(missing_ok=True)
    on_progress(90)
    cues = make_cues([segment.model_dump() for segment in answer.transcript], duration)
    captions: list[dict[str, str]] = []
    if cues:
        captions = publish_captions(
            delivery,
            hls_dir=inputs.hls_dir,
            out_dir=inputs.work_dir / "published",
            prefix=inputs.prefix,
            cues=cues,
            language=language_tag(answer.language),
            name=answer.language_name.strip() or "Captions",
            duration=duration,
            mpegts_start=first_segment_start(media_playlist),
        )
    analysis = {"backend": "gemini", "model": settings.gemini_model, "rendition": chosen[0]["name"]}
    return {"analysis": analysis | answer.model_dump(), "captions": captions}
