"""GET /jobs/<id>/events: Server-Sent Events of a real running job, progress included, until it
ends; a reconnect with Last-Event-ID resumes after the last event seen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import ApiClient, WorkerProcess
from tests.media import make_clip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clip_720p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Long enough that transcoding its four renditions spans several one-second heartbeats.
    return make_clip(tmp_path_factory.mktemp("sse") / "clip.mp4", width=1280, height=720, seconds=10)


def read_stream(
    client: ApiClient, job_id: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every message of the stream, parsed, until the server closes it."""
    response = client.get(f"/api/v1/jobs/{job_id}/events", headers=headers or {}, stream=True)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    messages, fields = [], {}
    for line in response.iter_lines(decode_unicode=True):
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if "data" in fields:
            messages.append({"id": int(fields["id"]), "event": fields["event"], **json.loads(fields["data"])})
        fields = {}
    return messages


def test_stream_carries_progress_of_a_running_job_until_it_ends(
    client: ApiClient, other_client: ApiClient, workers: WorkerProcess, clip_720p: Path
) -> None:
    job_id = client.upload(clip_720p).json()["id"]
    assert other_client.get(f"/api/v1/jobs/{job_id}/events").status_code == 404

    messages = read_stream(client, job_id)
    types = [message["event"] for message in messages]
    assert types[0] == "job.queued" and types[-1] == "job.succeeded", types
    assert [m["id"] for m in messages] == sorted({m["id"] for m in messages})
    assert all(message["type"] == message["event"] and message["job_id"] == job_id for message in messages)
    started = [m["stage"] for m in messages if m["event"] == "stage.started"]
    assert started[:4] == ["fetch", "transcode", "upload", "analyze"]
    progress = [
        m["data"]["progress"]
        for m in messages
        if m["event"] == "stage.progress" and m["stage"] == "transcode"
    ]
    assert progress, f"no transcode progress in {types}"
    assert progress == sorted(progress) and all(0 < value <= 100 for value in progress)

    middle = messages[len(messages) // 2]
    resumed = read_stream(client, job_id, {"Last-Event-ID": str(middle["id"])})
    assert resumed == [m for m in messages if m["id"] > middle["id"]]
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded"
