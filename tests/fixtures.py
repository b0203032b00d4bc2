"""Session fixtures for the real services; see conftest.py for the environment they share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import requests
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from scripts.s3server import start_weed, stop_weed
from services.config import get_settings
from tests.conftest import API_PORT, REDIS_OWNER_KEY, S3_PORT, TEST_DB, TEST_ROOT, WORKSPACE_BUCKET

REPO = Path(__file__).resolve().parent.parent
HOST = os.uname().nodename
QUEUES = "fetch,video,upload,analyze,notify,maintenance"


def migrate_fresh_database() -> None:
    drop_database()
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEST_DB}")
    config = Config(str(REPO / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def drop_database() -> None:
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEST_DB} WITH (FORCE)")


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    migrate_fresh_database()
    yield get_settings().database_url
    from tasks.runtime import engine

    engine().dispose()
    drop_database()


@pytest.fixture(scope="session")
def sessions(database: str) -> sessionmaker[Session]:
    from tasks.runtime import session_factory

    return session_factory()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    from services.storage import configure_delivery_bucket, ensure_bucket, make_s3_client

    settings = get_settings()
    proc = start_weed(
        TEST_ROOT / "s3",
        s3_port=S3_PORT,
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    )
    # The workspace bucket exists before anything runs, as an operator makes it (workers and
    # the API never create it: a missing workspace bucket is a fault to report, not to paper over).
    ensure_bucket(make_s3_client(settings), WORKSPACE_BUCKET)
    # Set-up, as `make run` does it (the embedded S3 server) and never a worker.
    configure_delivery_bucket(make_s3_client(settings), settings.s3_bucket, settings.s3_cors_origins)
    yield settings.s3_endpoint_url or ""
    stop_weed(proc)


def wait_until(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll until condition() is truthy; fail the test with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class WorkerProcess:
    name: str
    queues: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def worker_answers(name: str) -> bool:
    """Whether the worker answers a ping, asked over a broker connection of its own: a pooled
    one may predate a Redis restart."""
    from tasks import app

    with app.connection_for_write() as connection:
        replies = app.control.ping(destination=[f"{name}@{HOST}"], timeout=0.5, connection=connection)
    return bool(replies)


@contextmanager
def queue_taken_off(queue: str, worker: str) -> Iterator[None]:
    """`queue` taken off the worker named `worker` (celery control cancel_consumer) and given
    back after (add_consumer), each over a broker connection of its own: a pooled one may
    predate a Redis restart."""
    from tasks import app

    destination = [f"{worker}@{HOST}"]
    with app.connection_for_write() as connection:
        app.control.cancel_consumer(queue, destination=destination, reply=True, connection=connection)
    try:
        yield
    finally:
        with app.connection_for_write() as connection:
            app.control.add_consumer(queue, destination=destination, reply=True, connection=connection)


def start_worker(
    name: str,
    queues: str = QUEUES,
    *,
    concurrency: int = 2,
    beat: bool = False,
    env: dict[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> WorkerProcess:
    """A real `celery -A tasks worker` process, returned once it answers a ping.

    `env` overrides settings for this worker alone (e.g. a short STAGE_TIME_LIMITS);
    `wrapper` is a command the worker runs under (e.g. one that gives it a mount namespace)."""

    log_path = TEST_ROOT / f"worker-{name}.log"
    args = [
        sys.executable, "-m", "celery", "-A", "tasks", "worker",
        "-Q", queues, "-n", f"{name}@%h", "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle", "-E",
    ]  # fmt: skip
    if beat:
        args += ["--beat", "--schedule", str(TEST_ROOT / f"beat-{name}")]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*wrapper, *args],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ | (env or {}),
        )
    worker = WorkerProcess(name, queues, proc, log_path)

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker {name} exited:\n{worker.log()[-3000:]}")
        return worker_answers(name)

    try:
        wait_until(answers, timeout=60, what=f"worker {name} to answer ping")
    except BaseException:
        stop_worker(worker)  # a worker left running would take later tests' messages
        raise
    return worker


def stop_worker(worker: WorkerProcess, *, sig: int = signal.SIGTERM) -> None:
    if worker.proc.poll() is None:
        os.killpg(worker.proc.pid, sig)
        try:
            worker.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()


@pytest.fixture(scope="session")
def clean_broker() -> None:
    client = redis.Redis.from_url(get_settings().redis_url)
    client.flushdb()
    client.set(REDIS_OWNER_KEY, os.getpid())  # still this session's database


class WorkerPool:
    """The suite's default worker (every queue, with beat), which fault-injection tests stop
    while they run workers of their own."""

    def __init__(self) -> None:
        self.default: WorkerProcess | None = None

    def ensure_default(self) -> WorkerProcess:
        if self.default is None or self.default.proc.poll() is not None:
            self.default = start_worker("all", beat=True)
        return self.default

    def stop_default(self) -> None:
        if self.default is not None:
            stop_worker(self.default)
            self.default = None


@pytest.fixture(scope="session")
def worker_pool(database: str, s3_server: str, clean_broker: None) -> Iterator[WorkerPool]:
    pool = WorkerPool()
    yield pool
    pool.stop_default()


@pytest.fixture
def workers(worker_pool: WorkerPool) -> WorkerProcess:
    return worker_pool.ensure_default()


@contextmanager
def video_alone_on(workers: WorkerProcess, name: str, env: dict[str, str]) -> Iterator[list[WorkerProcess]]:
    """The `video` queue served by two workers `name`-a and `name`-b alone (concurrency 1 each,
    `env` their settings), the shared worker's share given back after."""
    with queue_taken_off("video", workers.name):
        hosts = [start_worker(f"{name}-{host}", "video", concurrency=1, env=env) for host in ("a", "b")]
        try:
            yield hosts
        finally:
            for host in hosts:
                stop_worker(host)


@pytest.fixture
def video_hosts(workers: WorkerProcess) -> Iterator[list[WorkerProcess]]:
    """Two video workers planning parts of 4 s (two segments): every job longer than that is
    transcoded in parts across them."""
    with video_alone_on(workers, "parts", {"PART_SECONDS": "4"}) as hosts:
        yield hosts


@pytest.fixture(scope="session")
def api_url(database: str, s3_server: str) -> Iterator[str]:
    from api import create_app

    server = make_server("127.0.0.1", API_PORT, create_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def make_key(sessions: sessionmaker[Session], name: str, *, admin: bool = False) -> str:
    from services.apikeys import create_key

    with sessions.begin() as session:
        _, key = create_key(session, name, admin=admin)
    return key


@pytest.fixture(scope="session")
def api_key(sessions: sessionmaker[Session]) -> str:
    return make_key(sessions, "tenant-a")


@pytest.fixture(scope="session")
def other_api_key(sessions: sessionmaker[Session]) -> str:
    return make_key(sessions, "tenant-b")


@pytest.fixture(scope="session")
def admin_key(sessions: sessionmaker[Session]) -> str:
    return make_key(sessions, "ops", admin=True)


@dataclass
class ApiClient:
    base: str
    key: str | None
    http: requests.Session = field(default_factory=requests.Session)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        headers = self.headers() | kwargs.pop("headers", {})
        return self.http.get(self.base + path, headers=headers, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        headers = self.headers() | kwargs.pop("headers", {})
        return self.http.post(self.base + path, headers=headers, timeout=60, **kwargs)

    def upload(self, path: Path, options: dict[str, Any] | None = None) -> requests.Response:
        import json

        with path.open("rb") as body:
            data = {"options": json.dumps(options)} if options is not None else {}
            return self.post("/api/v1/uploads", files={"file": (path.name, body, "video/mp4")}, data=data)

    def wait_for_job(self, job_id: str, *, timeout: float = 120) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            job: dict[str, Any] = self.get(f"/api/v1/jobs/{job_id}").json()
            return job if job["status"] in ("succeeded", "failed", "canceled") else None

        result: dict[str, Any] = wait_until(ended, timeout=timeout, interval=0.2, what=f"job {job_id} to end")
        return result


@pytest.fixture
def client(api_url: str, api_key: str) -> ApiClient:
    return ApiClient(api_url, api_key)


@dataclass
class WebhookReceiver:
    """A real HTTP receiver. It answers `statuses` in order (then 200), and 500 to the first
    `fail_first_per_id` deliveries of each webhook-id."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    fail_first_per_id: int = 0
    seen_per_id: Counter[str] = field(default_factory=Counter)
    event: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.received.append((headers, body))
            webhook_id = headers.get("webhook-id", "")
            self.seen_per_id[webhook_id] += 1
            if self.statuses:
                return self.statuses.pop(0)
            return 500 if self.seen_per_id[webhook_id] <= self.fail_first_per_id else 200


@contextmanager
def receiving_webhooks() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            if status < 300:
                receiver.event.set()

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_port}/hooks/conveyor"
    try:
        yield receiver
    finally:
        server.shutdown()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with receiving_webhooks() as receiver:
        yield receiver


@pytest.fixture
def second_webhook_receiver() -> Iterator[WebhookReceiver]:
    """Another tenant's receiver."""
    with receiving_webhooks() as receiver:
        yield receiver


def new_id() -> str:
    return str(uuid.uuid4())
