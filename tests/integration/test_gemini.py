"""Gemini analysis through the real google-genai client against the local stand-in
(tests/gemini_server.py), on renditions made by the real transcode."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.analysis.gemini import VideoAnalysis, analyze_video, pick_rendition, rendition_to_mp4
from services.config import get_settings
from services.errors import Canceled, ConveyorError
from services.google_ai import gemini_client
from services.media.hls import transcode_to_hls
from services.media.probe import probe
from tests.gemini_server import ANALYSIS, FakeGoogle, serving, settings_for
from tests.media import make_clip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def google(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGoogle]:
    clip = make_clip(tmp_path_factory.mktemp("veo") / "veo.mp4", seconds=1)
    with serving(clip.read_bytes()) as server:
        yield server


@pytest.fixture
def fake(google: FakeGoogle) -> FakeGoogle:
    google.reset()
    return google


@pytest.fixture(scope="module")
def hls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A 720p source transcoded to every rendition, as the transcode stage leaves it."""
    folder = tmp_path_factory.mktemp("hls")
    source = make_clip(folder / "source.mp4", width=1280, height=720, seconds=3)
    out = folder / "out"
    out.mkdir()
    transcoded = transcode_to_hls(
        source,
        out,
        get_settings(),
        info=probe(source),
        requested=None,
        on_progress=lambda _: None,
        should_stop=lambda: False,
    )
    return out, transcoded["renditions"]


@pytest.fixture
def upload(hls: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> Path:
    out, renditions = hls
    rendition = pick_rendition(renditions)
    assert rendition is not None
    # The picture and its sound, which live in separate renditions, in one file.
    return rendition_to_mp4(
        [out / rendition["name"] / "index.m3u8", out / "audio-0" / "index.m3u8"],
        tmp_path / "upload.mp4",
        duration=3.0,
        settings=get_settings(),
        on_progress=lambda _: None,
        should_stop=lambda: False,
    )


def analyze(fake: FakeGoogle, video: Path, **overrides: Any) -> VideoAnalysis:
    settings = settings_for(fake, **overrides)
    return analyze_video(
        gemini_client(settings),
        video,
        prompt=None,
        settings=settings,
        on_progress=lambda _: None,
        should_stop=lambda: False,
    )


def video_stream(data: bytes, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "received.mp4"
    path.write_bytes(data)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    info: dict[str, Any] = json.loads(probe.stdout)
    return info


@pytest.mark.parametrize(
    ("sizes", "chosen"),
    [
        ([(426, 240), (640, 360), (854, 480), (1280, 720)], "360p"),
        ([(240, 426), (360, 640), (480, 854)], "360p"),  # portrait: the short side decides
        ([(426, 240)], "240p"),  # nothing readable: the best there is
        ([(854, 480), (1920, 1080)], "480p"),
    ],
)
def test_the_smallest_readable_rendition_is_chosen(sizes: list[tuple[int, int]], chosen: str) -> None:
    renditions = [{"name": f"{min(w, h)}p", "width": w, "height": h} for w, h in sizes]
    assert pick_rendition(list(reversed(renditions)))["name"] == chosen


def test_success_uploads_the_360p_rendition_asks_with_a_schema_and_deletes_the_file(
    fake: FakeGoogle, upload: Path, tmp_path: Path
) -> None:
    fake.switches.processing_polls = 2
    answer = analyze(fake, upload)

    assert answer.model_dump() == ANALYSIS
    [name] = fake.received
    assert fake.deleted == [name]
    info = video_stream(fake.received[name], tmp_path)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (640, 360)  # the rendition, not the 720p original
    assert any(s["codec_type"] == "audio" for s in info["streams"])  # speech must reach the model
    assert abs(float(info["format"]["duration"]) - 3.0) < 0.2

    # The paths google-genai 3.6.1 uses against a custom base_url: API version v1.
    assert [(r.method, r.path.split("?")[0]) for r in fake.requests] == [
        ("POST", "/upload/v1/files"),
        ("POST", "/upload/v1/files"),
        ("GET", f"/v1/{name}"),
        ("GET", f"/v1/{name}"),
        ("GET", f"/v1/{name}"),
        ("POST", "/v1/models/gemini-2.5-flash:generateContent"),
        ("DELETE", f"/v1/{name}"),
    ]
    [ask] = fake.calls("POST", ":generateContent$")
    schema = ask.body["generationConfig"]["responseSchema"]
    assert {"summary", "key_moments", "transcript", "flags"} <= set(schema["properties"])
    assert ask.body["contents"][0]["parts"][1]["text"].startswith("Analyze this video.")


def test_file_that_never_becomes_active_fails_at_the_deadline_and_is_deleted(
    fake: FakeGoogle, upload: Path
) -> None:
    fake.switches.never_active = True
    with pytest.raises(ConveyorError) as caught:
        analyze(fake, upload, gemini_file_active_timeout_seconds=1.0)
    assert (caught.value.code, caught.value.transient) == ("timeout", True)
    assert fake.calls("POST", ":generateContent$") == []
    assert fake.deleted == list(fake.received)


def test_rate_limit_then_success_is_retried_by_the_client(fake: FakeGoogle, upload: Path) -> None:
    fake.switches.rate_limited = 1
    assert analyze(fake, upload).summary == ANALYSIS["summary"]
    assert len(fake.calls("POST", ":generateContent$")) == 2
    assert fake.deleted == list(fake.received)


def test_rate_limit_that_lasts_is_a_transient_stage_error(fake: FakeGoogle, upload: Path) -> None:
    fake.switches.rate_limited = 10
    with pytest.raises(ConveyorError) as caught:
        analyze(fake, upload)
    assert (caught.value.code, caught.value.transient) == ("rate_limited", True)
    assert len(fake.calls("POST", ":generateContent$")) == 3  # the client's own attempts
    assert fake.deleted == list(fake.received)


def test_safety_refusal_is_permanent_and_the_file_is_deleted(fake: FakeGoogle, upload: Path) -> None:
    fake.switches.safety = True
    with pytest.raises(ConveyorError) as caught:
        analyze(fake, upload)
    assert (caught.value.code, caught.value.transient) == ("content_blocked", False)
    assert fake.deleted == list(fake.received)


def test_answer_outside_the_schema_is_retried_by_the_stage(fake: FakeGoogle, upload: Path) -> None:
    fake.switches.answer = {"summary": "no transcript"}
    with pytest.raises(ConveyorError) as caught:
        analyze(fake, upload)
    assert (caught.value.code, caught.value.transient) == ("analysis_failed", True)
    assert fake.deleted == list(fake.received)


def test_cancel_while_waiting_for_active_still_deletes_the_file(fake: FakeGoogle, upload: Path) -> None:
    fake.switches.never_active = True
    settings = settings_for(fake)
    with pytest.raises(Canceled):
        analyze_video(
            gemini_client(settings),
            upload,
            prompt="custom",
            settings=settings,
            on_progress=lambda _: None,
            should_stop=lambda: True,
        )
    assert fake.deleted == list(fake.received)


def test_wrong_key_is_a_permanent_rejection(fake: FakeGoogle, upload: Path) -> None:
    with pytest.raises(ConveyorError) as caught:
        analyze(fake, upload, google_api_key="not-the-key")
    assert (caught.value.code, caught.value.transient) == ("provider_rejected", False)
    assert fake.received == {}
