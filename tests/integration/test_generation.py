"""Veo generation through the real google-genai client (Vertex AI mode, a fixed access token)
against the local stand-in, and how provider failures are classified. The operation being
waited for is the fetch stage's resume state, on its row in the real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from models import JobStage
from services.apikeys import create_key
from services.contract import claim_stage
from services.errors import Canceled, ConveyorError
from services.generation import generate_source, operation_error, start_or_resume
from services.google_ai import vertex_client
from services.jobs import create_job
from services.media.probe import probe
from services.stage_state import StageState
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


def claim_fetch(sessions: sessionmaker[Session], job_id: uuid.UUID) -> StageState:
    """Claim the job's fetch stage as a worker would: its resume state as that attempt sees it."""
    with sessions.begin() as session:
        claim = claim_stage(
            session, job_id, "fetch", worker="veo-test", lease_seconds=30, max_attempts=3
        ).claim
    assert claim is not None
    return StageState(sessions, job_id, "fetch", claim.attempt)


@pytest.fixture
def state(sessions: sessionmaker[Session]) -> StageState:
    with sessions.begin() as session:
        owner, _ = create_key(session, "veo")
        job_id = create_job(
            session, owner_id=owner.id, source={"generate": {"prompt": "A paper boat"}}, options={}
        ).job.id
    return claim_fetch(sessions, job_id)


def generate(
    fake: FakeGoogle, state: StageState, progress: list[float] | None = None, **overrides: Any
) -> bytes:
    return generate_source(
        {"prompt": "A paper boat on a rainy street", "duration_seconds": 4},
        settings_for(fake, **overrides),
        state,
        on_progress=(progress if progress is not None else []).append,
        should_stop=lambda: False,
    )


def test_generated_video_is_the_source(fake: FakeGoogle, state: StageState, tmp_path: Path) -> None:
    fake.switches.pending_polls = 3
    progress: list[float] = []
    data = generate(fake, state, progress)

    assert data == fake.video
    (tmp_path / "veo.mp4").write_bytes(data)
    info = probe(tmp_path / "veo.mp4")
    assert info.video is not None and (info.video.width, info.video.height) == (640, 360)
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


def test_rate_limit_then_success(fake: FakeGoogle, state: StageState) -> None:
    fake.switches.rate_limited = 1
    assert generate(fake, state) == fake.video
    assert len(fake.calls("POST", ":predictLongRunning$")) == 2


def test_safety_filter_is_permanent_and_forgets_the_operation(fake: FakeGoogle, state: StageState) -> None:
    fake.switches.safety = True
    with pytest.raises(ConveyorError) as caught:
        generate(fake, state)
    assert (caught.value.code, caught.value.transient) == ("content_blocked", False)
    assert "usage guidelines" in caught.value.message
    assert state.read() is None


def test_deadline_while_polling(fake: FakeGoogle, state: StageState) -> None:
    fake.switches.pending_polls = 10_000
    with pytest.raises(ConveyorError) as caught:
        generate(fake, state, veo_deadline_seconds=0.5)
    assert (caught.value.code, caught.value.transient) == ("timeout", False)


def test_a_retried_stage_resumes_the_same_operation(
    fake: FakeGoogle, state: StageState, sessions: sessionmaker[Session]
) -> None:
    settings = settings_for(fake)
    request = {"prompt": "A paper boat"}
    # The first attempt started the generation and then its worker was lost: its lease runs
    # out and another attempt, on any host, claims the stage.
    operation = start_or_resume(vertex_client(settings), request, state, settings)
    with sessions.begin() as session:
        session.execute(
            update(JobStage)
            .where(JobStage.job_id == state.job_id, JobStage.name == "fetch")
            .values(lease_until=JobStage.lease_until - timedelta(hours=1))
        )
    second = claim_fetch(sessions, state.job_id)
    assert second.attempt == state.attempt + 1
    data = generate_source(request, settings, second, on_progress=lambda _: None, should_stop=lambda: False)

    assert len(fake.calls("POST", ":predictLongRunning$")) == 1
    assert {poll.body["operationName"] for poll in fake.calls("POST", ":fetchPredictOperation$")} == {
        operation.name
    }
    assert data == fake.video
    assert second.read() == {"veo_operation": operation.name}
    # The first attempt, no longer the stage's, can change nothing and is told to stop.
    with pytest.raises(Canceled):
        state.write(None)
    assert second.read() == {"veo_operation": operation.name}


def test_cancel_while_polling_stops(fake: FakeGoogle, state: StageState) -> None:
    fake.switches.pending_polls = 10_000
    with pytest.raises(Canceled):
        generate_source(
            {"prompt": "x"},
            settings_for(fake),
            state,
            on_progress=lambda _: None,
            should_stop=lambda: True,
        )


def test_wrong_token_is_permanent(fake: FakeGoogle, state: StageState) -> None:
    with pytest.raises(ConveyorError) as caught:
        generate(fake, state, google_access_token="expired")
    assert (caught.value.code, caught.value.transient) == ("provider_unauthorized", False)


def test_no_project_means_generation_is_unavailable(fake: FakeGoogle, state: StageState) -> None:
    with pytest.raises(ConveyorError) as caught:
        generate(fake, state, google_cloud_project=None)
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
