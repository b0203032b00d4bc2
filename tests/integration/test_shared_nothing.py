"""Hosts that share nothing but the PostgreSQL, Redis and S3 endpoints: the API and one worker
per queue (fetch, video, upload, analyze, notify) each run in a mount namespace of its own,
with an empty tmpfs over /tmp (every scratch folder, TEST_ROOT and its logs, media and S3
data, pytest's own folders) and /dev/shm. A path one process wrote and another read would
not exist for the reader, so any stray shared path fails the job loudly; the control test
shows that it would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import m3u8
import psycopg
import pytest
import requests
from standardwebhooks import Webhook

from tests.conftest import TEST_DB, TEST_ROOT
from tests.fixtures import (
    REPO,
    ApiClient,
    WebhookReceiver,
    WorkerPool,
    WorkerProcess,
    start_worker,
    stop_worker,
    wait_until,
)
from tests.local_http import serving_bytes
from tests.media import make_clip

pytestmark = pytest.mark.integration

QUEUES = ("fetch", "video", "upload", "analyze", "notify")
PRIVATE = ("/tmp", "/dev/shm")
# A user namespace where we are not root already (unshare as a user needs one for mounts).
_AS_ROOT = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
ISOLATED = [
    "unshare", *_AS_ROOT, "--mount", "--propagation", "private",
    "sh", "-ec", " ".join(f"mount -t tmpfs -o size=4g tmpfs {folder};" for folder in PRIVATE) + ' exec "$@"',
    "isolated",
]  # fmt: skip
# Bytecode goes to the private /tmp too: not even .pyc files are written for another to read.
ISOLATED_ENV = {"PYTHONPYCACHEPREFIX": "/tmp/pycache", "PYTHONDONTWRITEBYTECODE": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class IsolatedApi:
    """gunicorn, as `make run` starts it, in a mount namespace of its own."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = TEST_ROOT / f"api-isolated-{port}.log"
        args = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "api:create_app()",
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*ISOLATED, *args],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Its playback links name this API, whatever other API the suite runs.
                env=os.environ | ISOLATED_ENV | {"API_PUBLIC_URL": self.url} | (env or {}),
            )

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the isolated API exited:\n{self.log.read_text()[-3000:]}")
            try:
                return requests.get(f"{self.url}/livez", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(answers, timeout=60, what="the isolated API to answer")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=30)


@pytest.fixture
def isolated_hosts(worker_pool: WorkerPool) -> Iterator[tuple[IsolatedApi, list[WorkerProcess]]]:
    worker_pool.stop_default()
    workers: list[WorkerProcess] = []
    api = IsolatedApi()
    try:
        for queue in QUEUES:
            workers.append(
                start_worker(
                    f"{queue}-alone",
                    queue,
                    concurrency=1,
                    env=ISOLATED_ENV | {"API_PUBLIC_URL": api.url},
                    wrapper=ISOLATED,
                )
            )
        yield api, workers
    finally:
        for worker in workers:
            stop_worker(worker)
        api.stop()


@pytest.fixture
def source_url(tmp_path: Path) -> Iterator[str]:
    """A URL source served by this process, from a file no other process can see."""
    clip = make_clip(tmp_path / "remote.mp4", width=640, height=360, seconds=2)
    with serving_bytes(clip.read_bytes(), "remote.mp4") as url:
        yield url


def stage_workers(job_id: str) -> dict[str, str]:
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={TEST_DB}") as conn:
        rows = conn.execute("SELECT name, worker FROM job_stages WHERE job_id = %s", (job_id,)).fetchall()
    return {name: worker or "" for name, worker in rows}


def test_the_pipeline_runs_on_hosts_that_share_nothing(
    isolated_hosts: tuple[IsolatedApi, list[WorkerProcess]],
    api_key: str,
    webhook_receiver: WebhookReceiver,
    source_url: str,
    tmp_path: Path,
) -> None:
    api, _ = isolated_hosts
    client = ApiClient(api.url, api_key)
    clip = make_clip(tmp_path / "clip.mp4", width=640, height=360, seconds=3)
    uploaded = client.upload(clip, {"webhook_url": webhook_receiver.url})
    assert uploaded.status_code == 202, uploaded.text
    fetched = client.post("/api/v1/jobs", json={"source": {"url": source_url}})
    assert fetched.status_code == 202, fetched.text

    for answer, seconds in ((uploaded, 3.0), (fetched, 2.0)):
        job = client.wait_for_job(answer.json()["id"], timeout=180)
        assert job["status"] == "succeeded", job
        # Each stage ran on the worker of its own queue, in its own namespace.
        ran_on = stage_workers(job["id"])
        for stage, queue in zip(("fetch", "transcode", "upload", "analyze"), QUEUES, strict=False):
            assert ran_on[stage].startswith(f"{queue}-alone@"), ran_on
        result = job["result"]
        playback = result["playback_url"]
        master = m3u8.loads(requests.get(playback, timeout=10).text, uri=playback)
        variant = master.playlists[0].absolute_uri
        media = m3u8.loads(requests.get(variant, timeout=10).text, uri=variant)
        assert abs(sum(segment.duration for segment in media.segments) - seconds) < 0.2
        assert requests.get(media.segments[0].absolute_uri, timeout=10).status_code == 200
        assert abs(result["analysis"]["duration"] - seconds) <= 0.2

    assert webhook_receiver.event.wait(30), "no webhook arrived"
    headers, body = webhook_receiver.received[-1]
    secret = client.get("/api/v1/webhook-secret").json()["secret"]
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "job.succeeded" and payload["data"]["id"] == uploaded.json()["id"]


def test_an_isolated_process_does_not_see_a_folder_another_one_made() -> None:
    """The control: a file:// workspace this process made is not there for an isolated API, so
    a deployment that relied on a shared folder could not pass the test above."""
    folder = TEST_ROOT / "looks-shared"
    folder.mkdir(exist_ok=True)
    api = IsolatedApi({"WORKSPACE_URL": folder.as_uri()})
    try:
        ready = requests.get(f"{api.url}/readyz", timeout=10)
    finally:
        api.stop()
    assert folder.is_dir()
    assert ready.status_code == 503
    check = ready.json()["checks"]["workspace"]
    assert check["ok"] is False and "does not exist" in check["error"]
