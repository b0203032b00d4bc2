"""A generated source: a Veo video made from the job's prompt on Vertex AI, saved into the workspace.

Generation is slow and paid for, so the operation's name is kept beside the source: a fetch
stage that is retried (worker lost, transient error while polling) resumes polling the same
operation instead of paying for a second video.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google import genai
from google.genai import types

from services.config import Settings
from services.errors import ConveyorError
from services.google_ai import (
    GOOGLE_FAILURES,
    TRANSIENT_RPC_CODES,
    looks_like_safety,
    pause_unless_stopped,
    provider_error,
    vertex_client,
)

MAX_POLL_SECONDS = 60.0
# Polling takes most of a generation's time; the rest is the download and the probe.
POLLING_SHARE = 90.0


class GenerationFailed(ConveyorError):
    code = "generation_failed"


def start_or_resume(
    client: genai.Client, request: dict[str, Any], state: Path, settings: Settings
) -> types.GenerateVideosOperation:
    if state.exists():
        name = json.loads(state.read_text())["operation"]
        return types.GenerateVideosOperation.from_api_response({"name": name}, is_vertex_ai=True)
    operation = client.models.generate_videos(
        model=request.get("model") or settings.veo_model,
        source=types.GenerateVideosSource(prompt=request["prompt"]),
        config=types.GenerateVideosConfig(
            number_of_videos=1, duration_seconds=request.get("duration_seconds")
        ),
    )
    if not operation.name:
        raise GenerationFailed("Veo answered without an operation name.", transient=True)
    state.write_text(json.dumps({"operation": operation.name}))
    return operation


def poll_until_done(
    client: genai.Client,
    operation: types.GenerateVideosOperation,
    *,
    settings: Settings,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> types.GenerateVideosOperation:
    """Poll with exponential backoff up to the deadline; progress grows with the time spent."""
    started = time.monotonic()
    deadline = started + settings.veo_deadline_seconds
    delay = settings.veo_poll_initial_seconds
    while not operation.done:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GenerationFailed(
                f"Veo did not finish within {settings.veo_deadline_seconds:g} s.", code="timeout"
            )
        pause_unless_stopped(min(delay, remaining), should_stop)
        delay = min(delay * 2, MAX_POLL_SECONDS)
        operation = client.operations.get(operation)
        elapsed = time.monotonic() - started
        on_progress(min(POLLING_SHARE - 1, POLLING_SHARE * elapsed / settings.veo_deadline_seconds))
    return operation


def operation_error(error: dict[str, Any]) -> GenerationFailed:
    """The stage error for an operation that ended with a google.rpc.Status."""
    message = str(error.get("message", "no message"))
    code = error.get("code")
    text = f"Veo failed: {message} (code {code})."
    if code in TRANSIENT_RPC_CODES:
        return GenerationFailed(
            text, code="rate_limited" if code == 8 else "provider_unavailable", transient=True
        )
    if looks_like_safety(message):
        return GenerationFailed(text, code="content_blocked")
    return GenerationFailed(text, code="provider_rejected")


def video_bytes(operation: types.GenerateVideosOperation) -> bytes:
    result = operation.result
    videos = (result.generated_videos if result else None) or []
    if not videos:
        filtered = result.rai_media_filtered_reasons if result else None
        if result and (result.rai_media_filtered_count or filtered):
            raise GenerationFailed(
                f"Veo's safety filters withheld the video: {'; '.join(filtered or [])}.",
                code="content_blocked",
            )
        raise GenerationFailed("Veo finished without a video.")
    video = videos[0].video
    if video is None or not video.video_bytes:
        # We never set storageUri, so Vertex answers inline; a gs:// URI means it was set elsewhere.
        raise GenerationFailed("Veo returned a storage URI instead of the video itself.")
    return video.video_bytes


def generate_source(
    request: dict[str, Any],
    dest: Path,
    state: Path,
    settings: Settings,
    *,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> Path:
    """Generate the video for request ({"prompt", "model"?, "duration_seconds"?}) into dest;
    `state` keeps the operation's name, so a later attempt resumes it instead of paying again."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    state.parent.mkdir(parents=True, exist_ok=True)
    client = vertex_client(settings)
    try:
        operation = start_or_resume(client, request, state, settings)
        operation = poll_until_done(
            client, operation, settings=settings, on_progress=on_progress, should_stop=should_stop
        )
        if operation.error:
            # The next attempt must start a new generation, not find this failed one again.
            state.unlink(missing_ok=True)
            raise operation_error(operation.error)
        data = video_bytes(operation)
    except GOOGLE_FAILURES as exc:
        if getattr(exc, "code", None) == 404:
            state.unlink(missing_ok=True)  # an operation Google no longer knows cannot be resumed
        raise provider_error(exc, what="Veo") from exc
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(data)
    os.replace(part, dest)
    state.unlink(missing_ok=True)
    return dest
