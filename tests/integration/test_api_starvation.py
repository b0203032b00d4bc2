"""An API that cannot be starved, on a real gunicorn as gunicorn.conf.py configures it: with
200 progress streams open, GET /livez and a job submission each answer within 1 s (the
issue's bound), and an event written meanwhile reaches the streams of its job."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy.orm import Session, sessionmaker

from services.contract import record_event
from tests.conftest import TEST_ROOT, free_port
from tests.fixtures import REPO, make_key, wait_until
from tests.streams import open_stream, parked_jobs

pytestmark = pytest.mark.integration

STREAMS = 200
JOBS = 10
BOUND_SECONDS = 1.0


@pytest.fixture
def gunicorn(database: str, s3_server: str) -> Iterator[str]:
    port = free_port()
    log = (TEST_ROOT / "gunicorn-starvation.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "api:create_app()"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, (TEST_ROOT / "gunicorn-starvation.log").read_text()[-3000:]
        try:
            return requests.get(f"{url}/livez", timeout=1).ok
        except requests.RequestException:
            return False

    try:
        wait_until(answers, timeout=60, what="gunicorn to answer")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # quick shutdown: streams would hold a graceful one
        proc.wait(timeout=30)
        log.close()


def read_until(conn: socket.socket, marker: bytes, timeout: float) -> bytes:
    conn.settimeout(timeout)
    seen = b""
    while marker not in seen:
        chunk = conn.recv(65536)
        if not chunk:
            break
        seen += chunk
    return seen


def timed(call: object) -> float:
    started = time.perf_counter()
    answer = call()  # type: ignore[operator]
    elapsed = time.perf_counter() - started
    assert answer.status_code in (200, 202), answer.text
    return elapsed


def test_200_open_streams_starve_neither_livez_nor_submissions(
    gunicorn: str, sessions: sessionmaker[Session]
) -> None:
    key = make_key(sessions, "streams")
    with sessions() as session, session.connection() as connection:
        from services.apikeys import find_key

        owner = find_key(connection, key)
    assert owner is not None
    jobs = parked_jobs(sessions, owner.id, JOBS)
    streams = [open_stream(gunicorn, key, jobs[n % JOBS]) for n in range(STREAMS)]
    try:
        for conn in streams:
            assert b"retry: 2000" in read_until(conn, b"job.queued", timeout=30)
        headers = {"Authorization": f"Bearer {key}"}
        livez = timed(lambda: requests.get(f"{gunicorn}/livez", timeout=10))
        submission = timed(
            lambda: requests.post(
                f"{gunicorn}/api/v1/jobs",
                json={"source": {"url": "http://127.0.0.1:9/y.mp4"}},
                headers=headers,
                timeout=10,
            )
        )
        assert livez < BOUND_SECONDS, f"/livez took {livez:.2f} s with {STREAMS} streams open"
        assert submission < BOUND_SECONDS, f"a submission took {submission:.2f} s with {STREAMS} streams open"

        with sessions.begin() as session:
            record_event(session, jobs[0], "stage.progress", "fetch", progress=42.0)
        for conn in streams[0:STREAMS:JOBS]:  # the streams of jobs[0]
            assert b"stage.progress" in read_until(conn, b"stage.progress", timeout=10)
    finally:
        for conn in streams:
            conn.close()
