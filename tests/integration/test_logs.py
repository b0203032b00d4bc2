"""Logs are JSON, one object a line, with a request id (API) or job id and stage (workers), and
never carry an API key, an Authorization header or a presigned URL's signature."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from tests.fixtures import ApiClient, WorkerProcess
from tests.ops_fixtures import CapturedLogs

pytestmark = pytest.mark.integration

SIGNATURE_MARKERS = ("X-Amz-Signature", "X-Amz-Credential", "Signature=")


def test_logs_are_json_with_ids_and_free_of_secrets(
    client: ApiClient, workers: WorkerProcess, captured_logs: CapturedLogs, small_clip: Path
) -> None:
    answer = client.post(
        "/api/v1/uploads",
        files={"file": (small_clip.name, small_clip.read_bytes(), "video/mp4")},
        headers={"X-Request-Id": "ops-logs-test"},
    )
    assert answer.status_code == 202 and answer.headers["X-Request-Id"] == "ops-logs-test"
    job_id = answer.json()["id"]
    assert client.wait_for_job(job_id)["status"] == "succeeded"
    result = client.get(f"/api/v1/jobs/{job_id}/result").json()
    # The playback link's token and the presigned URLs the API serves inside its playlists are
    # exactly what must not leak.
    master = requests.get(result["playback_url"], timeout=10)
    assert master.status_code == 200
    variant = next(line for line in master.text.splitlines() if line and not line.startswith("#"))
    media = requests.get(urljoin(result["playback_url"], variant), timeout=10)
    assert "X-Amz-Signature" in media.text
    token = result["playback_url"].split("/")[-2]
    client.get(f"/api/v1/jobs/{job_id}", params={"token": "never-logged"})

    api_text = captured_logs.text()
    entries = captured_logs.entries()  # every line parses as JSON
    requests_logged = [e for e in entries if e["logger"] == "conveyor.api" and e["msg"] == "request"]
    assert any(e["request_id"] == "ops-logs-test" and e["path"] == "/api/v1/uploads" for e in requests_logged)
    assert all(len(e["request_id"]) > 0 for e in requests_logged)

    worker_text = workers.log()
    worker_entries = [json.loads(line) for line in worker_text.splitlines() if line.startswith("{")]
    mine = [e for e in worker_entries if e.get("job_id") == job_id]
    assert {"fetch", "transcode", "upload", "analyze"} <= {e.get("stage") for e in mine}

    for text in (api_text, worker_text):
        assert client.key not in text  # type: ignore[operator]
        assert "Bearer" not in text and "Authorization" not in text
        assert not any(marker in text for marker in SIGNATURE_MARKERS)
    # Our request log names the playback route by its template (the test's werkzeug server logs
    # raw paths itself; gunicorn, which serves for real, keeps no access log).
    assert token not in worker_text
    assert not any(token in json.dumps(e) for e in entries if e["logger"].startswith("conveyor"))
    # Our request log records the path, never the query string (where tokens end up).
    assert not any("never-logged" in json.dumps(e) for e in entries if e["logger"].startswith("conveyor"))
