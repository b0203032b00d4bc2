"""Clients for Google's model APIs (google-genai), and what their failures mean for a stage.

Gemini (analysis) speaks the Gemini Developer API with an API key; Veo (generation) exists
only on Vertex AI, which wants OAuth credentials for a project and location.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2
from google import genai
from google.genai import errors, types
from google.oauth2.credentials import Credentials

from services.config import Settings
from services.errors import Canceled, ConveyorError

# One request (a generateContent over a long video included) may take this long.
REQUEST_TIMEOUT_MS = 600_000
# The client retries these itself, a few times within one stage attempt, before the stage's
# own retry (a fresh attempt, possibly on another worker) takes over.
RETRY = types.HttpRetryOptions(
    attempts=3, initial_delay=1.0, max_delay=30.0, http_status_codes=[408, 429, 500, 502, 503, 504]
)
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# google.rpc.Code values an operation may end with that are worth another attempt.
TRANSIENT_RPC_CODES = frozenset({4, 8, 10, 13, 14})  # DEADLINE_EXCEEDED ... UNAVAILABLE
SAFETY_WORDS = ("safety", "usage guidelines", "responsible ai", "prohibited", "blocked")
# How often a wait between polls asks whether the stage should stop.
STOP_CHECK_SECONDS = 0.5
# What a call to Google may raise that says something about the call rather than our code
# (httpx2 is the transport google-genai depends on).
GOOGLE_FAILURES = (errors.APIError, httpx2.TransportError)


def _http_options(base_url: str | None) -> types.HttpOptions:
    return types.HttpOptions(base_url=base_url, timeout=REQUEST_TIMEOUT_MS, retry_options=RETRY)


def gemini_client(settings: Settings) -> genai.Client:
    if not settings.google_api_key:
        raise ConveyorError("GOOGLE_API_KEY is not set on this worker.", code="backend_unavailable")
    # vertexai=False explicitly: GOOGLE_GENAI_USE_VERTEXAI in the environment must not flip it.
    return genai.Client(
        vertexai=False, api_key=settings.google_api_key, http_options=_http_options(settings.gemini_base_url)
    )


def vertex_client(settings: Settings) -> genai.Client:
    """A Vertex AI client for settings.google_cloud_project.

    With GOOGLE_ACCESS_TOKEN the client gets OAuth credentials holding that token and no
    refresh means (no expiry, so google-auth never tries to refresh it over the network);
    otherwise credentials=None makes the client use Application Default Credentials.
    """
    if not settings.google_cloud_project:
        raise ConveyorError("GOOGLE_CLOUD_PROJECT is not set on this worker.", code="backend_unavailable")
    credentials = (
        Credentials(token=settings.google_access_token)  # type: ignore[no-untyped-call]
        if settings.google_access_token
        else None
    )
    return genai.Client(
        vertexai=True,
        credentials=credentials,
        project=settings.google_cloud_project,
        location=settings.google_cloud_location,
        http_options=_http_options(settings.vertex_base_url),
    )


def looks_like_safety(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in SAFETY_WORDS)


def provider_error(exc: errors.APIError | httpx2.TransportError, *, what: str) -> ConveyorError:
    """A stage error for a failed call to Google: rate limits and outages are retried,
    refusals and invalid requests fail the job with a stable code."""
    if isinstance(exc, errors.APIError):
        message = f"{what}: HTTP {exc.code} {exc.status or ''} {exc.message or ''}".strip()
        if exc.code == 429:
            return ConveyorError(message, code="rate_limited", transient=True)
        if exc.code in TRANSIENT_STATUSES:
            return ConveyorError(message, code="provider_unavailable", transient=True)
        if looks_like_safety(exc.message or ""):
            return ConveyorError(message, code="content_blocked", transient=False)
        if exc.code in (401, 403):
            return ConveyorError(message, code="provider_unauthorized", transient=False)
        return ConveyorError(message, code="provider_rejected", transient=False)
    return ConveyorError(
        f"{what}: {type(exc).__name__} talking to Google.", code="provider_unavailable", transient=True
    )


def pause_unless_stopped(seconds: float, should_stop: Callable[[], bool]) -> None:
    """Wait between polls of a remote job, but leave at once when the stage is canceled."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if should_stop():
            raise Canceled("The stage was canceled while waiting for Google.")
        time.sleep(min(left, STOP_CHECK_SECONDS))
