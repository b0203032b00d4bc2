"""Bad input gets a clear error (stable code, fitting status, a message a person understands)
and loses nothing: the next good job still goes through."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import ApiClient, WorkerProcess, new_id
from tests.media import make_clip

pytestmark = pytest.mark.integration


def error_of(response: object) -> dict[str, str]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def test_zero_byte_upload_is_refused(client: ApiClient, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    answer = client.upload(empty)
    assert answer.status_code == 422
    assert error_of(answer)["code"] == "invalid_media"


@pytest.mark.parametrize(
    "make_bad",
    [
        pytest.param(lambda p: p.write_text("this is not a video, just text\n" * 50), id="text-named-mp4"),
        pytest.param(
            lambda p: p.write_bytes(make_clip(p.with_suffix(".full.mp4"), seconds=2).read_bytes()[:20_000]),
            id="truncated-mp4",
        ),
    ],
)
def test_undecodable_upload_fails_the_job_with_invalid_media(
    client: ApiClient, workers: WorkerProcess, tmp_path: Path, make_bad: object
) -> None:
    bad = tmp_path / "bad.mp4"
    make_bad(bad)  # type: ignore[operator]
    answer = client.upload(bad)
    assert answer.status_code == 202, answer.text
    job = client.wait_for_job(answer.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_media"
    assert "not a readable video" in job["error"]["message"] or "no duration" in job["error"]["message"]
    fetch = job["stages"][0]
    assert fetch["status"] == "failed" and fetch["attempts"] == 1  # permanent: never retried
    assert all(stage["status"] == "pending" for stage in job["stages"][1:4])
    assert client.get(f"/api/v1/jobs/{job['id']}/result").status_code == 404


def test_unknown_option_is_refused_before_anything_is_stored(client: ApiClient, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "ok.mp4", seconds=1)
    answer = client.upload(clip, {"renditions": ["720p"], "colour": "blue"})
    assert answer.status_code == 400
    error = error_of(answer)
    assert error["code"] == "invalid_options"
    assert "colour" in error["message"]

    answer = client.post(
        "/api/v1/jobs", json={"source": {"url": "https://example.com/a.mp4"}, "options": {"x": 1}}
    )
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "invalid_options"


def test_unknown_rendition_and_bad_source(client: ApiClient) -> None:
    answer = client.post(
        "/api/v1/jobs",
        json={"source": {"url": "https://example.com/a.mp4"}, "options": {"renditions": ["4k"]}},
    )
    assert answer.status_code == 400
    assert "4k" in error_of(answer)["message"]
    answer = client.post("/api/v1/jobs", json={"source": {"url": "file:///etc/passwd"}})
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "invalid_source"
    answer = client.post("/api/v1/jobs", data="not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "invalid_request"


def test_missing_or_wrong_auth_is_401(api_url: str, tmp_path: Path) -> None:
    anonymous = ApiClient(api_url, None)
    answer = anonymous.get(f"/api/v1/jobs/{new_id()}")
    assert answer.status_code == 401
    assert error_of(answer)["code"] == "unauthorized"
    assert ApiClient(api_url, "cvk_not-a-real-key").get(f"/api/v1/jobs/{new_id()}").status_code == 401
    clip = make_clip(tmp_path / "ok.mp4", seconds=1)
    assert anonymous.upload(clip).status_code == 401
    assert anonymous.get("/livez").status_code == 200


def test_other_tenants_job_is_404_but_admin_sees_it(
    client: ApiClient, api_url: str, other_api_key: str, admin_key: str
) -> None:
    answer = client.post("/api/v1/jobs", json={"source": {"url": "http://127.0.0.1:9/never.mp4"}})
    assert answer.status_code == 202
    job_id = answer.json()["id"]
    other = ApiClient(api_url, other_api_key)
    for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/result"):
        answer = other.get(path)
        assert answer.status_code == 404
        assert error_of(answer)["code"] == "not_found"
    assert other.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 404
    assert ApiClient(api_url, admin_key).get(f"/api/v1/jobs/{job_id}").json()["id"] == job_id
    assert client.get("/api/v1/jobs/not-a-uuid").status_code == 404


def test_good_job_after_bad_ones_still_succeeds(
    client: ApiClient, workers: WorkerProcess, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("garbage")
    bad_job = client.upload(bad).json()
    good_job = client.upload(make_clip(tmp_path / "good.mp4", seconds=1), {"renditions": ["240p"]}).json()
    assert client.wait_for_job(bad_job["id"])["status"] == "failed"
    finished = client.wait_for_job(good_job["id"])
    assert finished["status"] == "succeeded", finished
    assert [r["name"] for r in finished["result"]["renditions"]] == ["240p"]
