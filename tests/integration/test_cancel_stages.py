"""Cancel belongs to the contract: whatever stage a job is in, a cancel ends it `canceled`
within 2 s, the stage's work stops (a download mid-read, a copy, a publish, a wait on Google),
and no later stage ever starts. Real workers, a real slow source and a real S3 server behind a
slow link; only Google is the local stand-in. (Transcode is covered in test_cancel_timeout.)"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import JobEvent
from services.apikeys import set_entitlements
from services.config import get_settings
from services.storage import ensure_bucket, make_s3_client
from tests.fixtures import (
    ApiClient,
    WorkerPool,
    WorkerProcess,
    make_key,
    queue_taken_off,
    start_worker,
    stop_worker,
    wait_until,
)
from tests.gemini_server import FakeGoogle, serving, worker_env
from tests.local_http import running
from tests.media import make_clip
from tests.throttle import Throttle, throttled

pytestmark = pytest.mark.integration

SOURCE_BUCKET = "conveyor-cancel-sources"
CANCEL_DEADLINE = 2.0


class Trickle(ThreadingHTTPServer):
    """Promises a large video and sends it a few bytes at a time, until the client hangs up."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), TrickleHandler)
        self.sending = threading.Event()
        self.hung_up = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/lecture.mp4"


class TrickleHandler(BaseHTTPRequestHandler):
    server: Trickle

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(50 * 1024 * 1024))
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0" * 1024)
                self.wfile.flush()
                self.server.sending.set()
                time.sleep(0.05)  # the pace of a slow server, not synchronisation
        except OSError:
            self.server.hung_up.set()

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture(scope="module")
def google(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGoogle]:
    clip = make_clip(tmp_path_factory.mktemp("veo") / "veo.mp4", width=320, height=240, seconds=1)
    with serving(clip.read_bytes()) as server:
        yield server


@pytest.fixture(scope="module")
def crew(worker_pool: WorkerPool, google: FakeGoogle) -> Iterator[WorkerProcess]:
    """One worker on every queue, with Google's stand-in and an S3 bucket open to sources."""
    worker_pool.stop_default()
    env = worker_env(google) | {"S3_SOURCE_BUCKETS": json.dumps([SOURCE_BUCKET])}
    worker = start_worker("cancels", env=env)
    yield worker
    stop_worker(worker)


@pytest.fixture
def fake(google: FakeGoogle) -> FakeGoogle:
    google.reset()
    return google


@pytest.fixture(scope="module")
def entitled(api_url: str, sessions: sessionmaker[Session]) -> ApiClient:
    """A key allowed to read the source bucket and to send its videos to Google."""
    key = make_key(sessions, "cancel-tenant")
    with sessions.begin() as session:
        set_entitlements(
            session, key[:12], {"analysis_backends": ["local", "gemini"], "source_buckets": [SOURCE_BUCKET]}
        )
    return ApiClient(api_url, key)


@contextmanager
def queue_behind_a_slow_link(crew: WorkerProcess, queue: str, rate: int) -> Iterator[Throttle]:
    """`queue` served by a worker whose S3 endpoint is the real one behind a slow link."""
    endpoint = urlsplit(get_settings().s3_endpoint_url or "")
    with (
        throttled((endpoint.hostname or "127.0.0.1", endpoint.port or 80), rate) as link,
        queue_taken_off(queue, crew.name),
    ):
        # The workspace stays on the direct endpoint, so the upload stage streams every object
        # through the slow link (a server-side copy from the same endpoint would send none).
        env = {
            "S3_ENDPOINT_URL": link.url,
            "WORKSPACE_S3_ENDPOINT_URL": get_settings().s3_endpoint_url or "",
            "S3_SOURCE_BUCKETS": json.dumps([SOURCE_BUCKET]),
        }
        slow = start_worker(f"slow-{queue}", queue, concurrency=1, env=env)
        try:
            yield link
        finally:
            stop_worker(slow)


def stage(job: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in job["stages"] if s["name"] == name)


def running_stage(client: ApiClient, job_id: str, name: str, *, progressed: bool = False) -> bool:
    found = stage(client.get(f"/api/v1/jobs/{job_id}").json(), name)
    return found["status"] == "running" and (not progressed or found["progress"] > 0)


def cancel_and_wait(client: ApiClient, job_id: str) -> dict[str, Any]:
    """Cancel, and return the job once it has ended, which must be within CANCEL_DEADLINE."""
    answer = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert answer.status_code == 202, answer.text

    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
        return job if job["status"] not in ("queued", "running") else None

    job: dict[str, Any] = wait_until(ended, timeout=CANCEL_DEADLINE, interval=0.05, what="the job to end")
    return job


def assert_canceled_in(job: dict[str, Any], name: str, sessions: sessionmaker[Session]) -> None:
    assert (job["status"], job["error"]["code"]) == ("canceled", "canceled"), job
    assert stage(job, name)["status"] == "canceled"
    later = [s for s in job["stages"] if s["name"] not in (name, "notify")][
        [s["name"] for s in job["stages"]].index(name) :
    ]
    assert all(s["attempts"] == 0 for s in later), job["stages"]
    with sessions() as session:
        types = session.scalars(
            select(JobEvent.type).where(JobEvent.job_id == uuid.UUID(job["id"])).order_by(JobEvent.id)
        ).all()
    assert types.count("job.canceled") == 1 and types[-1] == "job.canceled"
    assert "job.succeeded" not in types and "job.failed" not in types


def test_cancel_during_a_slow_download_stops_it_and_ends_the_job(
    crew: WorkerProcess, client: ApiClient, sessions: sessionmaker[Session]
) -> None:
    with running(Trickle()) as source:
        job_id = client.post("/api/v1/jobs", json={"source": {"url": source.url}}).json()["id"]
        wait_until(source.sending.is_set, timeout=30, what="the download to start")
        job = cancel_and_wait(client, job_id)
        wait_until(source.hung_up.is_set, timeout=CANCEL_DEADLINE, what="the download to be cut")
    assert_canceled_in(job, "fetch", sessions)


def test_cancel_during_an_s3_copy_stops_it(
    crew: WorkerProcess, entitled: ApiClient, sessions: sessionmaker[Session]
) -> None:
    client = entitled
    s3 = make_s3_client(get_settings())
    ensure_bucket(s3, SOURCE_BUCKET)
    s3.put_object(Bucket=SOURCE_BUCKET, Key="big.mp4", Body=os.urandom(12 * 1024 * 1024))
    with queue_behind_a_slow_link(crew, "fetch", rate=512 * 1024) as link:
        body = {"source": {"s3": {"bucket": SOURCE_BUCKET, "key": "big.mp4"}}}
        job_id = client.post("/api/v1/jobs", json=body).json()["id"]
        wait_until(
            lambda: running_stage(client, job_id, "fetch") and link.sockets, timeout=30, what="the copy"
        )
        job = cancel_and_wait(client, job_id)
    assert_canceled_in(job, "fetch", sessions)


def test_cancel_during_a_generation_stops_polling(
    crew: WorkerProcess, client: ApiClient, sessions: sessionmaker[Session], fake: FakeGoogle
) -> None:
    fake.switches.pending_polls = 10_000
    job_id = client.post("/api/v1/jobs", json={"source": {"generate": {"prompt": "a slow sunrise"}}}).json()[
        "id"
    ]
    wait_until(lambda: fake.calls("POST", ":fetchPredictOperation$"), timeout=30, what="Veo being polled")
    job = cancel_and_wait(client, job_id)
    assert_canceled_in(job, "fetch", sessions)


def test_cancel_during_publishing_stops_it_and_removes_what_was_published(
    crew: WorkerProcess, client: ApiClient, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", width=640, height=360, seconds=8)
    with queue_behind_a_slow_link(crew, "upload", rate=64 * 1024):
        job_id = client.upload(clip, {"renditions": ["240p", "360p"]}).json()["id"]
        wait_until(
            lambda: running_stage(client, job_id, "upload", progressed=True), timeout=90, what="publishing"
        )
        job = cancel_and_wait(client, job_id)
    assert_canceled_in(job, "upload", sessions)
    settings = get_settings()
    s3 = make_s3_client(settings)

    def published() -> list[str]:
        listed = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"{settings.s3_prefix}/{job_id}/")
        return [item["Key"] for item in listed.get("Contents", [])]

    wait_until(lambda: published() == [], timeout=30, what="the half publish to be removed")


def test_cancel_during_a_gemini_analysis_ends_canceled_not_succeeded(
    crew: WorkerProcess,
    entitled: ApiClient,
    sessions: sessionmaker[Session],
    fake: FakeGoogle,
    tmp_path: Path,
) -> None:
    client = entitled
    fake.switches.processing_polls = 10_000  # the uploaded video never becomes ACTIVE
    clip = make_clip(tmp_path / "clip.mp4", width=320, height=240, seconds=2)
    job_id = client.upload(clip, {"renditions": ["240p"], "analysis": {"backend": "gemini"}}).json()["id"]
    wait_until(lambda: fake.calls("GET", "/files/"), timeout=60, what="the analysis to wait on Google")
    job = cancel_and_wait(client, job_id)
    assert_canceled_in(job, "analyze", sessions)
    wait_until(lambda: fake.deleted, timeout=10, what="the uploaded file to be deleted")


def test_a_cancel_answered_while_the_job_ends_is_never_lost(
    crew: WorkerProcess, client: ApiClient, tmp_path: Path
) -> None:
    """Cancels racing stage boundaries: each job ends in exactly one terminal state, and one
    that was canceled before its last stage completed never reports success."""
    clip = make_clip(tmp_path / "clip.mp4", seconds=1)
    ids = [client.upload(clip, {"renditions": ["240p"]}).json()["id"] for _ in range(6)]
    answers = {job_id: client.post(f"/api/v1/jobs/{job_id}/cancel").status_code for job_id in ids}
    for job_id, status in answers.items():
        job = client.wait_for_job(job_id, timeout=60)
        if status == 202:
            assert job["status"] == "canceled", job
        else:
            assert (status, job["status"]) == (409, "succeeded"), job
