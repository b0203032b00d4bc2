"""A generated source: a Veo video made from the job's prompt on Vertex AI.

Generation is slow and paid for, so the operation's name is kept in the fetch stage's resume
state (in PostgreSQL, shared by the stage's attempts whatever host runs them): a fetch stage
that is retried (worker lost, transient error while polling) resumes polling the same
operation instead of paying for a second video.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

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


class ResumeState(Protocol):
    """What a stage keeps across its attempts (services.stage_state.StageState)."""

    def read(self) -> dict[str, Any] | None: ...

    def write(self, state: dict[str, Any] | None) -> None: ...


def start_or_resume(
    client: genai.Client, request: dict[str, Any], state: ResumeState, settings: Settings
) -> types.GenerateVideosOperation:
    name = (state.read() or {}).get("veo_operation")
    if name:
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
    state.write({"veo_operation": operation.name})
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
    settings: Settings,
    state: ResumeState,
    *,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> bytes:
    """The video for request ({"prompt", "model"?, "duration_seconds"?}). The operation stays
    in `state` once it succeeded: a later attempt (its success never recorded) gets the same
    video again instead of paying for another."""
    client = vertex_client(settings)
    try:
        operation = start_or_resume(client, request, state, settings)
        operation = poll_until_done(
            client, operation, settings=settings, on_progress=on_progress, should_stop=should_stop
        )
        if operation.error:
            # The next attempt must start a new generation, not find this failed one again.
            state.write(None)
            raise operation_error(operation.error)
        try:
            return video_bytes(operation)
        except GenerationFailed:
            state.write(None)  # withheld or missing: asking the same operation again cannot help
            raise
    except GOOGLE_FAILURES as exc:
        if getattr(exc, "code", None) == 404:
            state.write(None)  # an operation Google no longer knows cannot be resumed
        raise provider_error(exc, what="Veo") from exc
