"""Choosing the analysis backend for a job: the seam between the stage and the analyzers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.analysis import analyze_local
from services.config import Settings
from services.errors import AnalysisFailed
from services.probe import probe

BACKENDS = ("local", "gemini")


def default_backend(settings: Settings) -> str:
    return "gemini" if settings.google_api_key else "local"


def analyze_source(source: Path, options: dict[str, Any], settings: Settings) -> dict[str, Any]:
    backend = options.get("backend") or default_backend(settings)
    if backend == "local":
        return analyze_local(source, probe(source), timeout=settings.time_limits("analyze")[0])
    if backend == "gemini":
        # The Gemini analyzer (google-genai Files API + generate_content) is tracked in its own issue.
        raise AnalysisFailed(
            "The gemini analysis backend is not available in this build.", code="backend_unavailable"
        )
    raise AnalysisFailed(f"Unknown analysis backend {backend!r}.", code="invalid_options")
