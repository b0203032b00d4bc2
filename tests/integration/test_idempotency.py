"""Idempotency-Key on POST /jobs and POST /uploads, Stripe's semantics: the same key and body
answer the first job again (no second job), another body is 409 idempotency_mismatch, keys
are per tenant, and concurrent duplicates make one job."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import IdempotencyKey, Job, JobEvent
from services.apikeys import find_key
from tests.fixtures import ApiClient, make_key

pytestmark = pytest.mark.integration

BODY = {"source": {"url": "http://127.0.0.1:9/clip.mp4"}, "options": {"renditions": ["240p"]}}


@pytest.fixture
def tenant(api_url: str, sessions: sessionmaker[Session]) -> ApiClient:
    return ApiClient(api_url, make_key(sessions, "idempotent"))


def jobs_of(sessions: sessionmaker[Session], client: ApiClient) -> int:
    with sessions() as session, session.connection() as connection:
        caller = find_key(connection, client.key or "")
        assert caller is not None
        return int(
            session.scalar(select(func.count()).select_from(Job).where(Job.owner_id == caller.id)) or 0
        )


def test_the_same_key_and_body_answer_the_first_job(
    tenant: ApiClient, sessions: sessionmaker[Session]
) -> None:
    key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    first = tenant.post("/api/v1/jobs", json=BODY, headers=key)
    # Same body, other key order and spacing: the same request.
    again = tenant.post(
        "/api/v1/jobs",
        data='{"options": {"renditions": ["240p"]},   "source": {"url": "http://127.0.0.1:9/clip.mp4"}}',
        headers=key | {"Content-Type": "application/json"},
    )
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert jobs_of(sessions, tenant) == 1
    with sessions() as session:
        queued = session.scalar(
            select(func.count()).where(JobEvent.job_id == first.json()["id"], JobEvent.type == "job.queued")
        )
    assert queued == 1
    assert tenant.post("/api/v1/jobs", json=BODY).json()["id"] != first.json()["id"]  # no key: a new job


def test_the_same_key_with_another_body_is_refused(tenant: ApiClient) -> None:
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    assert tenant.post("/api/v1/jobs", json=BODY, headers=key).status_code == 202
    other = tenant.post("/api/v1/jobs", json=BODY | {"options": {"renditions": ["360p"]}}, headers=key)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_mismatch"
    too_long = tenant.post("/api/v1/jobs", json=BODY, headers={"Idempotency-Key": "x" * 256})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "invalid_request"


def test_keys_are_per_tenant(tenant: ApiClient, other_client: ApiClient) -> None:
    key = {"Idempotency-Key": f"shared-{uuid.uuid4()}"}
    mine = tenant.post("/api/v1/jobs", json=BODY, headers=key).json()["id"]
    theirs = other_client.post("/api/v1/jobs", json=BODY, headers=key)
    assert theirs.status_code == 202 and theirs.json()["id"] != mine


def test_concurrent_duplicates_make_one_job(tenant: ApiClient, sessions: sessionmaker[Session]) -> None:
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: tenant.post("/api/v1/jobs", json=BODY, headers=key), range(8)))
    assert {answer.status_code for answer in answers} == {202}, [a.text for a in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert jobs_of(sessions, tenant) == 1


def test_a_key_older_than_a_day_makes_a_new_job(tenant: ApiClient, sessions: sessionmaker[Session]) -> None:
    name = f"old-{uuid.uuid4()}"
    first = tenant.post("/api/v1/jobs", json=BODY, headers={"Idempotency-Key": name}).json()["id"]
    with sessions.begin() as session:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == name)
            .values(created_at=func.now() - func.make_interval(0, 0, 0, 1, 1))
        )
    later = tenant.post("/api/v1/jobs", json=BODY, headers={"Idempotency-Key": name})
    assert later.status_code == 202 and later.json()["id"] != first


def test_uploads_take_the_key_too(tenant: ApiClient, small_clip: Path, tmp_path: Path) -> None:
    key = {"Idempotency-Key": f"upload-{uuid.uuid4()}"}

    def upload(path: Path) -> object:
        with path.open("rb") as body:
            return tenant.post(
                "/api/v1/uploads", files={"file": ("clip.mp4", body, "video/mp4")}, headers=key
            )

    first, again = upload(small_clip), upload(small_clip)
    assert first.status_code == again.status_code == 202  # type: ignore[attr-defined]
    assert again.json()["id"] == first.json()["id"]  # type: ignore[attr-defined]
    changed = tmp_path / "changed.mp4"
    changed.write_bytes(small_clip.read_bytes() + b"\0")
    other = upload(changed)
    assert other.status_code == 409  # type: ignore[attr-defined]
    assert other.json()["error"]["code"] == "idempotency_mismatch"  # type: ignore[attr-defined]
