"""Video analysis with Gemini: upload a small rendition through the Files API, ask for a
structured answer (summary, key moments, transcript, flags), delete the upload whatever happens."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from google import genai
from google.genai import types
from pydantic import BaseModel, Field, ValidationError

from services.config import Settings
from services.errors import AnalysisFailed, TranscodeFailed
from services.google_ai import GOOGLE_FAILURES, pause_unless_stopped, provider_error
from services.media.ffmpeg import run_ffmpeg

log = logging.getLogger("conveyor.gemini")

# The smallest picture in which on-screen text and faces stay legible to the model; smaller
# renditions save upload time but lose exactly what the analysis is about.
READABLE_SHORT_SIDE = 360
FIRST_POLL_SECONDS = 0.5
MAX_POLL_SECONDS = 10.0
BLOCKING_FINISH_REASONS = frozenset(
    {
        types.FinishReason.SAFETY,
        types.FinishReason.PROHIBITED_CONTENT,
        types.FinishReason.BLOCKLIST,
        types.FinishReason.SPII,
        types.FinishReason.RECITATION,
        types.FinishReason.IMAGE_SAFETY,
    }
)
DEFAULT_PROMPT = (
    "Analyze this video. Summarize it in a few sentences; list its key moments with the time "
    "in seconds from the start; transcribe all speech as segments with start and end times in "
    "seconds; name the spoken language; and flag anything a publisher should review (violence, "
    "nudity, profanity, medical or legal claims, personal data on screen, poor audio or picture)."
)


class KeyMoment(BaseModel):
    time: float = Field(description="Seconds from the start of the video.")
    description: str


class TranscriptSegment(BaseModel):
    start: float = Field(description="Seconds from the start of the video where the speech begins.")
    end: float = Field(description="Seconds from the start of the video where the speech ends.")
    text: str


class VideoAnalysis(BaseModel):
    """The response schema Gemini answers in (JSON), and what the analyze stage records."""

    summary: str
    language: str = Field(description="BCP 47 tag of the main spoken language, e.g. en; und if none.")
    language_name: str = Field(description="The English name of that language, e.g. English.")
    key_moments: list[KeyMoment]
    transcript: list[TranscriptSegment]
    flags: list[str] = Field(description="Short labels of content a publisher should review.")


def pick_rendition(renditions: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The smallest H.264 rendition that is still readable, or the largest when none is; None
    for a source without picture."""
    pictures = [r for r in renditions if r["width"] and r.get("codec", "h264") == "h264"]
    if not pictures:
        return None
    ordered = sorted(pictures, key=lambda r: min(r["width"], r["height"]))
    readable = [r for r in ordered if min(r["width"], r["height"]) >= READABLE_SHORT_SIDE]
    return readable[0] if readable else ordered[-1]


def rendition_to_mp4(
    media_playlists: Sequence[Path],
    dest: Path,
    *,
    duration: float,
    settings: Settings,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> Path:
    """One mp4 of renditions' segments (a picture and its sound live in separate renditions),
    stream-copied: no re-encode, just a container the Files API accepts."""
    args = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-y",
        "-loglevel",
        "error",
        "-progress",
        "pipe:1",
        "-nostats",
    ]
    for playlist in media_playlists:
        args += ["-protocol_whitelist", "file", "-i", str(playlist)]
    for index in range(len(media_playlists)):
        args += ["-map", str(index)]
    args += ["-c", "copy", "-movflags", "+faststart", str(dest)]
    try:
        run_ffmpeg(
            args,
            duration=duration,
            on_progress=on_progress,
            should_stop=should_stop,
            timeout=settings.time_limits("analyze")[0],
            memory_limit_bytes=settings.ffmpeg_memory_limit_bytes,
        )
    except TranscodeFailed as exc:
        raise AnalysisFailed(f"The rendition could not be packed for upload: {exc.message}") from exc
    return dest


def wait_until_active(
    client: genai.Client, name: str, *, timeout: float, should_stop: Callable[[], bool]
) -> types.File:
    """Poll an uploaded file with growing pauses until Gemini has processed it."""
    deadline = time.monotonic() + timeout
    delay = FIRST_POLL_SECONDS
    while True:
        file = client.files.get(name=name)
        if file.state == types.FileState.ACTIVE:
            return file
        if file.state == types.FileState.FAILED:
            reason = file.error.message if file.error else "no reason given"
            raise AnalysisFailed(f"Gemini could not process the video ({reason}).", code="provider_rejected")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            # Processing is Google's queue; a later attempt (a fresh upload) may well be faster.
            raise AnalysisFailed(
                f"The uploaded video was not ready (ACTIVE) within {timeout:g} s.",
                code="timeout",
                transient=True,
            )
        pause_unless_stopped(min(delay, remaining), should_stop)
        delay = min(delay * 2, MAX_POLL_SECONDS)


def _answer(response: types.GenerateContentResponse) -> VideoAnalysis:
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise AnalysisFailed(
            f"Gemini refused the video ({feedback.block_reason.value}).", code="content_blocked"
        )
    candidate = response.candidates[0] if response.candidates else None
    if candidate is None or candidate.finish_reason in BLOCKING_FINISH_REASONS:
        reason = candidate.finish_reason.value if candidate and candidate.finish_reason else "no answer"
        raise AnalysisFailed(f"Gemini refused the video ({reason}).", code="content_blocked")
    try:
        return VideoAnalysis.model_validate_json(response.text or "")
    except ValidationError as exc:
        # A malformed answer is the model's luck of the draw; another attempt may well parse.
        raise AnalysisFailed(
            f"Gemini's answer does not match the schema ({exc.error_count()} errors).", transient=True
        ) from exc


def analyze_video(
    client: genai.Client,
    video: Path,
    *,
    prompt: str | None,
    settings: Settings,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> VideoAnalysis:
    """Upload, wait until ACTIVE, ask; the uploaded file is deleted on every way out."""
    name: str | None = None
    try:
        uploaded = client.files.upload(
            file=video, config=types.UploadFileConfig(mime_type="video/mp4", display_name=video.name)
        )
        name = uploaded.name
        if name is None:
            raise AnalysisFailed("The Files API answered without a file name.", transient=True)
        on_progress(40)
        file = wait_until_active(
            client, name, timeout=settings.gemini_file_active_timeout_seconds, should_stop=should_stop
        )
        on_progress(60)
        response = client.models.generate_content(
            model=settings.gemini_model,
            contents=[
                types.Part.from_uri(file_uri=file.uri or "", mime_type=file.mime_type or "video/mp4"),
                prompt or DEFAULT_PROMPT,
            ],
            config=types.GenerateContentConfig(
                response_mime_type="application/json", response_schema=VideoAnalysis
            ),
        )
        return _answer(response)
    except GOOGLE_FAILURES as exc:
        raise provider_error(exc, what="Gemini") from exc
    finally:
        if name is not None:
            _delete(client, name)


def _delete(client: genai.Client, name: str) -> None:
    try:
        client.files.delete(name=name)
    except GOOGLE_FAILURES:
        # The analysis result stands; Google drops uploads after 48 hours anyway.
        log.warning("could not delete the uploaded file", extra={"file": name}, exc_info=True)
