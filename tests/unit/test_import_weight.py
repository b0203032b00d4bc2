"""What every process pays before its first job. google-genai's pydantic models cost a process
about 25 MB of RSS when imported; the API and the workers of every queue load them only when
a job asks for Gemini or Veo (the fetch worker's 2 GB download peaked at 155 MB with them,
over the 150 MB bar, and at 135 MB without)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# What `celery -A tasks worker` imports (every task module celeryconfig names), and the API.
ENTRY_POINTS = {
    "worker": "from tasks import app; app.loader.import_default_modules()",
    "api": "from api import create_app; create_app()",
}


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_google_genai_is_not_loaded_until_a_job_needs_it(entry_point: str) -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            ENTRY_POINTS[entry_point]
            + "; import sys; print(sorted(m for m in sys.modules if m.startswith('google.genai')))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    assert loaded[-1] == "[]"  # the last line: the app may log before it
