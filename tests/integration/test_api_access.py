"""Access control and abuse limits: a revoked key is refused (at once if the API has not seen
it, within API_KEY_CACHE_SECONDS if it has), each tenant sees only its jobs on every job
route, the job list pages with a cursor, submissions are rate limited per key, and an
oversized upload is refused from its Content-Length before the body is read."""

from __future__ import annotations

import socket
from datetime import datetime
from urllib.parse import urlparse

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.apikeys import RecentKeys, create_key, revoke_key
from services.config import Settings
from tests.fixtures import ApiClient
from tests.ops_fixtures import api_server

pytestmark = pytest.mark.integration

# Nothing listens on the discard port: the fetch stage fails fast, nothing here needs it to run.
SOURCE = {"source": {"url": "http://127.0.0.1:9/clip.mp4"}}


def submit(client: ApiClient, **options: str) -> dict[str, object]:
    answer = client.post("/api/v1/jobs", json=SOURCE | {"options": options})
    assert answer.status_code == 202, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_a_revoked_key_is_refused(api_url: str, fresh_key: str, sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        assert revoke_key(session, fresh_key[:12]) == 1
    answer = ApiClient(api_url, fresh_key).get("/api/v1/jobs")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_found_live_is_trusted_for_the_cache_time_only(sessions: sessionmaker[Session]) -> None:
    clock = Clock()
    recent = RecentKeys(ttl_seconds=10, clock=clock)
    engine = sessions.kw["bind"]
    with sessions.begin() as session:
        row, key = create_key(session, "cached")
    caller = recent.find(engine.connect, key)
    assert caller is not None and caller.id == row.id and not caller.is_admin
    with sessions.begin() as session:
        revoke_key(session, key[:12])
    clock.now += 9.9
    assert recent.find(engine.connect, key) == caller  # the revocation is not seen yet
    clock.now += 0.2
    assert recent.find(engine.connect, key) is None
    assert recent.find(engine.connect, "cvk_unknown") is None
    uncached = RecentKeys(ttl_seconds=0, clock=clock)
    with sessions.begin() as session:
        _, live = create_key(session, "uncached")
    assert uncached.find(engine.connect, live) is not None
    with sessions.begin() as session:
        revoke_key(session, live[:12])
    assert uncached.find(engine.connect, live) is None


def test_every_job_route_is_404_for_another_tenant(
    client: ApiClient, other_client: ApiClient, admin_client: ApiClient
) -> None:
    job_id = submit(client)["id"]
    for method, path in [
        ("get", f"/api/v1/jobs/{job_id}"),
        ("get", f"/api/v1/jobs/{job_id}/result"),
        ("get", f"/api/v1/jobs/{job_id}/events"),
        ("post", f"/api/v1/jobs/{job_id}/cancel"),
        ("post", f"/api/v1/jobs/{job_id}/retry"),
    ]:
        answer = getattr(other_client, method)(path)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["error"]["code"] == "not_found"
    assert job_id not in [job["id"] for job in other_client.get("/api/v1/jobs").json()["jobs"]]
    assert admin_client.get(f"/api/v1/jobs/{job_id}").status_code == 200


def test_submission_answer_carries_the_place_in_line(client: ApiClient) -> None:
    job = submit(client, priority="low")
    assert job["status"] == "queued"
    assert isinstance(job["position"], int) and job["position"] >= 1
    assert "estimated_wait_seconds" in job


def test_job_list_pages_with_a_cursor_and_filters(api_url: str, fresh_key: str) -> None:
    tenant = ApiClient(api_url, fresh_key)
    created = [submit(tenant)["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = tenant.get("/api/v1/jobs", params=params).json()
        assert len(page["jobs"]) <= 2
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))  # newest first, each once

    first = tenant.get(f"/api/v1/jobs/{created[0]}").json()
    after = tenant.get("/api/v1/jobs", params={"created_after": first["created_at"]}).json()
    assert [job["id"] for job in after["jobs"]] == list(reversed(created[1:]))
    assert datetime.fromisoformat(after["jobs"][-1]["created_at"]) > datetime.fromisoformat(
        first["created_at"]
    )
    by_status = tenant.get("/api/v1/jobs", params={"status": "succeeded"}).json()
    assert all(job["status"] == "succeeded" for job in by_status["jobs"])

    for bad in ({"cursor": "not-a-cursor"}, {"limit": 0}, {"status": "lost"}, {"colour": "blue"}):
        answer = tenant.get("/api/v1/jobs", params=bad)
        assert answer.status_code == 400, bad
        assert answer.json()["error"]["code"] == "invalid_request"


def test_submissions_are_rate_limited_per_key(api_url: str, fresh_key: str, other_api_key: str) -> None:
    with api_server(Settings(submit_rate_limit="2/hour")) as limited_url:
        limited = ApiClient(limited_url, fresh_key)
        # An invalid body still counts: the limit guards the endpoint, not just the successes.
        assert [limited.post("/api/v1/jobs", json={}).status_code for _ in range(2)] == [400, 400]
        refused = limited.post("/api/v1/jobs", json=SOURCE)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 0 < int(refused.headers["Retry-After"]) <= 3600
        assert (refused.headers["X-RateLimit-Limit"], refused.headers["X-RateLimit-Remaining"]) == ("2", "0")
        # Uploads share the submission budget; another key has its own.
        assert limited.post("/api/v1/uploads", files={"file": ("a.mp4", b"x")}).status_code == 429
        assert ApiClient(limited_url, other_api_key).post("/api/v1/jobs", json={}).status_code == 400


def test_oversized_upload_is_refused_before_its_body_is_sent(api_url: str, api_key: str) -> None:
    with api_server(Settings(max_upload_bytes=1000)) as small_url:
        address = urlparse(small_url)
        head = (
            "POST /api/v1/uploads HTTP/1.1\r\n"
            f"Host: {address.netloc}\r\n"
            f"Authorization: Bearer {api_key}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n"
            "Content-Length: 1000001\r\n"
            "Connection: close\r\n\r\n"
        )
        # Only the headers go out: an answer proves the server decided without the body.
        with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
            conn.sendall(head.encode())
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
