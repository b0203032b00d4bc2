"""Choosing the analysis backend for a job: the seam between the analyze stage and the analyzers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.analysis.local import analyze_local
from services.captions import first_segment_start, language_tag, make_cues, publish_captions
from services.config import Settings
from services.errors import AnalysisFailed
from services.media.playlists import MASTER_PLAYLIST, MEDIA_PLAYLIST, referenced_uris
from services.media.probe import MediaInfo
from services.publishing import WorkspaceFolder
from services.storage import Delivery
from services.workspace import StopCheck, Workspace

BACKENDS = ("local", "gemini")
# Segments of one rendition fetched side by side: each is a small GET, mostly waiting.
DOWNLOAD_CONCURRENCY = 8


@dataclass(frozen=True)
class EarlierOutputs:
    """What earlier stages left in the workspace, copied into this attempt's scratch only when
    the backend needs it (Gemini never reads the source; the local analysis reads one rendition)."""

    workspace: Workspace
    source_key: str  # the original, as the fetch stage recorded it
    # The transcode attempt that succeeded (master.m3u8, <rendition>/index.m3u8), over its
    # parts' segments when it stitched parts.
    transcoded: WorkspaceFolder
    scratch: Path
    should_stop: StopCheck

    def source(self) -> Path:
        return self.workspace.get_file(self.source_key, self.scratch / "source", should_stop=self.should_stop)

    def media_playlist(self, rendition: str) -> Path:
        """The rendition's folder in scratch (playlist, init section, segments); its playlist.

        ffmpeg's HLS demuxer opens whatever a playlist names, so the playlist must name only
        files of its own folder: one that points at another file or at a URL is refused
        before any ffmpeg opens it."""
        prefix = f"{rendition}/"
        files = {
            name[len(prefix) :]: stored
            for name, stored in self.transcoded.objects.items()
            if name.startswith(prefix)
        }
        if MEDIA_PLAYLIST not in files:
            raise AnalysisFailed(f"The transcode left no {rendition} playlist.")
        playlist = self.transcoded.read_text(prefix + MEDIA_PLAYLIST)
        foreign = [uri for uri in referenced_uris(playlist) if uri not in files or "/" in uri]
        if foreign:
            raise AnalysisFailed(f"The {rendition} playlist names {foreign[0]!r}, not a file of its own.")
        folder = self.scratch / "hls" / rendition

        def copy(name: str) -> Path:
            return self.workspace.get_file(files[name].key, folder / name, should_stop=self.should_stop)

        with ThreadPoolExecutor(DOWNLOAD_CONCURRENCY, thread_name_prefix="analysis-inputs") as pool:
            list(pool.map(copy, [name for name in files if "/" not in name]))
        return folder / MEDIA_PLAYLIST

    def master_playlist(self) -> str:
        return self.transcoded.read_text(MASTER_PLAYLIST)


@dataclass(frozen=True)
class AnalysisInputs:
    """What the analysis works from."""

    outputs: EarlierOutputs
    info: MediaInfo  # the original as the fetch stage probed it
    renditions: list[dict[str, Any]]
    prefix: str  # where the upload stage published the stream
    work_dir: Path  # in this attempt's scratch, empty at the start
    audio: list[dict[str, Any]] = field(default_factory=list)  # the transcode's audio renditions


def smallest_picture(renditions: Sequence[dict[str, Any]]) -> str | None:
    """The name of the smallest rendition with a picture; None for sound only."""
    pictures = [rendition for rendition in renditions if rendition["width"] > 0]
    # H.264 where there is a choice: every ffmpeg decodes it fastest.
    pictures = [r for r in pictures if r.get("codec", "h264") == "h264"] or pictures
    if not pictures:
        return None
    return str(min(pictures, key=lambda rendition: rendition["width"] * rendition["height"])["name"])


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
        smallest = smallest_picture(inputs.renditions)
        analysis = analyze_local(
            inputs.outputs.source(),
            inputs.info,
            pictures=inputs.outputs.media_playlist(smallest) if smallest else None,
            timeout=settings.time_limits("analyze")[0],
            should_stop=should_stop,
            memory_limit_bytes=settings.ffmpeg_memory_limit_bytes,
            ffmpeg=settings.ffmpeg_path,
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
    # Imported here, not at the top: google-genai's models cost every process that imports
    # them about 25 MB, and only a job that asked for Gemini needs them.
    from services.analysis.gemini import analyze_video, pick_rendition, rendition_to_mp4
    from services.google_ai import gemini_client

    rendition = pick_rendition(inputs.renditions)
    sound = inputs.audio[0] if inputs.audio else None
    chosen = [r for r in (rendition, sound) if r is not None]
    if not chosen:
        raise AnalysisFailed("The transcode left nothing to analyze.")
    # The picture with its (default) sound: they live in separate renditions.
    playlists = [inputs.outputs.media_playlist(r["name"]) for r in chosen]
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
            master=inputs.outputs.master_playlist(),
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
