"""Veo generation through the real google-genai client (Vertex AI mode, a fixed access token)
against the local stand-in, and how provider failures are classified."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.errors import Canceled, ConveyorError
from services.generation import generate_source, operation_error, start_or_resume
from services.google_ai import vertex_client
from services.probe import probe
from tests.gemini_server import ACCESS_TOKEN, PROJECT, FakeGoogle, serving, settings_for
from tests.media import make_clip

pytestmark = pytest.mark.integration

MODEL_PATH = (
    f"/v1beta1/projects/{PROJECT}/locations/us-central1/publishers/google/models/veo-3.0-generate-001"
)


@pytest.fixture(scope="module")
def google(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGoogle]:
    clip = make_clip(tmp_path_factory.mktemp("veo") / "veo.mp4", width=640, height=360, seconds=2)
    with serving(clip.read_bytes()) as server:
        yield server


@pytest.fixture
def fake(google: FakeGoogle) -> FakeGoogle:
    google.reset()
    return google


def generate(fake: FakeGoogle, dest: Path, progress: list[float] | None = None, **overrides: Any) -> Path:
    return generate_source(
        {"prompt": "A paper boat on a rainy street", "duration_seconds": 4},
        dest,
        dest.with_name("operation.json"),
        settings_for(fake, **overrides),
        on_progress=(progress if progress is not None else []).append,
        should_stop=lambda: False,
    )


def test_generated_video_lands_in_the_workspace(fake: FakeGoogle, tmp_path: Path) -> None:
    fake.switches.pending_polls = 3
    progress: list[float] = []
    dest = generate(fake, tmp_path / "source" / "original", progress)

    assert dest.read_bytes() == fake.video
    info = probe(dest)
    assert info.video is not None and (info.video.width, info.video.height) == (640, 360)
    assert [p for p in sorted(tmp_path.joinpath("source").iterdir())] == [dest]  # no state, no .part
    assert progress == sorted(progress) and len(progress) == 4 and progress[-1] < 90

    [start] = fake.calls("POST", ":predictLongRunning$")
    assert start.path == f"{MODEL_PATH}:predictLongRunning"
    assert start.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert start.body["instances"] == [{"prompt": "A paper boat on a rainy street"}]
    assert start.body["parameters"] == {"sampleCount": 1, "durationSeconds": 4}
    polls = fake.calls("POST", ":fetchPredictOperation$")
    assert len(polls) == 4
    assert {poll.path for poll in polls} == {f"{MODEL_PATH}:fetchPredictOperation"}
    assert polls[0].body["operationName"].startswith(f"{MODEL_PATH[len('/v1beta1/') :]}/operations/")


def test_rate_limit_then_success(fake: FakeGoogle, tmp_path: Path) -> None:
    fake.switches.rate_limited = 1
    assert generate(fake, tmp_path / "original").read_bytes() == fake.video
    assert len(fake.calls("POST", ":predictLongRunning$")) == 2


def test_safety_filter_is_permanent(fake: FakeGoogle, tmp_path: Path) -> None:
    fake.switches.safety = True
    with pytest.raises(ConveyorError) as caught:
        generate(fake, tmp_path / "original")
    assert (caught.value.code, caught.value.transient) == ("content_blocked", False)
    assert "usage guidelines" in caught.value.message
    assert not (tmp_path / "original").exists()


def test_deadline_while_polling(fake: FakeGoogle, tmp_path: Path) -> None:
    fake.switches.pending_polls = 10_000
    with pytest.raises(ConveyorError) as caught:
        generate(fake, tmp_path / "original", veo_deadline_seconds=0.5)
    assert (caught.value.code, caught.value.transient) == ("timeout", False)


def test_a_retried_stage_resumes_the_same_operation(fake: FakeGoogle, tmp_path: Path) -> None:
    settings = settings_for(fake)
    request = {"prompt": "A paper boat"}
    # The first attempt started the generation and then its worker was lost.
    state = tmp_path / "operation.json"
    operation = start_or_resume(vertex_client(settings), request, state, settings)
    # The next attempt writes its own file, but resumes the job's one generation.
    generate_source(
        request,
        tmp_path / "2" / "original",
        state,
        settings,
        on_progress=lambda _: None,
        should_stop=lambda: False,
    )
    dest = tmp_path / "2" / "original"

    assert len(fake.calls("POST", ":predictLongRunning$")) == 1
    assert {poll.body["operationName"] for poll in fake.calls("POST", ":fetchPredictOperation$")} == {
        operation.name
    }
    assert dest.read_bytes() == fake.video


def test_cancel_while_polling_stops(fake: FakeGoogle, tmp_path: Path) -> None:
    fake.switches.pending_polls = 10_000
    with pytest.raises(Canceled):
        generate_source(
            {"prompt": "x"},
            tmp_path / "original",
            tmp_path / "operation.json",
            settings_for(fake),
            on_progress=lambda _: None,
            should_stop=lambda: True,
        )


def test_wrong_token_is_permanent(fake: FakeGoogle, tmp_path: Path) -> None:
    with pytest.raises(ConveyorError) as caught:
        generate(fake, tmp_path / "original", google_access_token="expired")
    assert (caught.value.code, caught.value.transient) == ("provider_unauthorized", False)


def test_no_project_means_generation_is_unavailable(fake: FakeGoogle, tmp_path: Path) -> None:
    with pytest.raises(ConveyorError) as caught:
        generate(fake, tmp_path / "original", google_cloud_project=None)
    assert (caught.value.code, caught.value.transient) == ("backend_unavailable", False)


@pytest.mark.parametrize(
    ("error", "code", "transient"),
    [
        ({"code": 8, "message": "Quota exceeded"}, "rate_limited", True),
        ({"code": 14, "message": "The service is unavailable"}, "provider_unavailable", True),
        ({"code": 13, "message": "Internal error"}, "provider_unavailable", True),
        ({"code": 3, "message": "The prompt violates our usage guidelines"}, "content_blocked", False),
        ({"code": 3, "message": "durationSeconds must be between 4 and 8"}, "provider_rejected", False),
    ],
)
def test_operation_errors_are_classified(error: dict[str, Any], code: str, transient: bool) -> None:
    failure = operation_error(error)
    assert (failure.code, failure.transient) == (code, transient)
    assert json.dumps(error["message"])[1:-1] in failure.message
