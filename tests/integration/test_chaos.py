"""Fault injection on real processes: workers killed, Redis flushed or stopped, PostgreSQL
restarted, messages duplicated, a flaky webhook receiver. Every job must succeed, every
stage must complete exactly once, every playlist must be complete and decodable, and no
ffmpeg may be left behind. `make test` runs these with 20 jobs; `make chaos` with more."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import JobStage, WebhookDelivery
from services.config import get_settings
from tasks.pipeline import dispatch
from tests.chaos import JOBS_PER_SCENARIO, submit, verify
from tests.conftest import REDIS_OWNER_KEY
from tests.fixtures import (
    HOST,
    ApiClient,
    WebhookReceiver,
    WorkerPool,
    start_worker,
    stop_worker,
    wait_until,
    worker_answers,
)
from tests.media import make_clip

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

JOB_TIMEOUT = 300
IO_QUEUES = "fetch,upload,analyze,notify,maintenance"


class Crew:
    """The workers of one scenario: an I/O worker that also runs beat (the sweeper), and a
    transcode worker on the `video` queue, as separate processes."""

    def __init__(self) -> None:
        self.io = start_worker("chaos-io", IO_QUEUES, concurrency=2, beat=True)
        self.video = start_worker("chaos-video", "video", concurrency=2)

    def replace_video(self, *, sig: int) -> None:
        stop_worker(self.video, sig=sig)
        self.video = start_worker("chaos-video", "video", concurrency=2)

    def stop(self) -> None:
        for worker in (self.video, self.io):
            stop_worker(worker)


@pytest.fixture
def crew(worker_pool: WorkerPool) -> Iterator[Crew]:
    worker_pool.stop_default()
    crew = Crew()
    yield crew
    crew.stop()


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("chaos") / "small.mp4", width=320, height=240, seconds=1)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("chaos") / "long.mp4", width=1280, height=720, seconds=12)


def stage_started(sessions: sessionmaker[Session], ids: list[str], stage: str) -> bool:
    """True once any job's `stage` has begun (small clips transcode in well under a second, so
    waiting to see one mid-run would race)."""
    with sessions() as session:
        return bool(
            session.scalar(
                select(JobStage.id)
                .where(
                    JobStage.job_id.in_([uuid.UUID(i) for i in ids]),
                    JobStage.name == stage,
                    JobStage.status.in_(("running", "succeeded")),
                )
                .limit(1)
            )
        )


def running_stage(sessions: sessionmaker[Session], job_id: str, stage: str) -> bool:
    with sessions() as session:
        row = session.scalars(
            select(JobStage).where(JobStage.job_id == uuid.UUID(job_id), JobStage.name == stage)
        ).one()
        return row.status == "running" and row.progress > 0


def test_sigkill_video_worker_mid_transcode(
    crew: Crew, client: ApiClient, sessions: sessionmaker[Session], small_clip: Path, long_clip: Path
) -> None:
    started = time.monotonic()
    first = client.upload(long_clip, {"renditions": ["240p", "360p", "720p"]}).json()["id"]
    ids = [first, *submit(client, small_clip, JOBS_PER_SCENARIO - 1)]
    wait_until(
        lambda: running_stage(sessions, first, "transcode"), timeout=60, what="the long transcode to run"
    )
    crew.replace_video(sig=signal.SIGKILL)
    verify("sigkill-video-worker", client, sessions, ids, started, JOB_TIMEOUT)
    with sessions() as session:
        attempts = session.scalar(
            select(JobStage.attempts).where(JobStage.job_id == uuid.UUID(first), JobStage.name == "transcode")
        )
    assert attempts == 2  # the killed attempt, then the one that finished


def test_redis_flushall_while_jobs_are_queued_and_running(
    crew: Crew, client: ApiClient, sessions: sessionmaker[Session], small_clip: Path
) -> None:
    started = time.monotonic()
    ids = submit(client, small_clip, JOBS_PER_SCENARIO)
    wait_until(lambda: stage_started(sessions, ids, "transcode"), timeout=60, what="a transcode")
    # Everything the broker held is gone, as after FLUSHALL; FLUSHDB spares the Redis databases
    # of other test sessions on this machine.
    broker = redis.Redis.from_url(get_settings().redis_url)
    broker.flushdb()
    broker.set(REDIS_OWNER_KEY, os.getpid())
    verify("redis-flushall", client, sessions, ids, started, JOB_TIMEOUT)


def redis_answers() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False


def test_redis_stopped_for_ten_seconds(
    crew: Crew, client: ApiClient, sessions: sessionmaker[Session], small_clip: Path
) -> None:
    started = time.monotonic()
    ids = submit(client, small_clip, JOBS_PER_SCENARIO // 2)
    assert client.get("/api/v1/queue/health").json()["workers"]["video"]  # pools a broker connection
    redis.Redis(host="127.0.0.1", port=6379).shutdown(nosave=True)
    down_since = time.monotonic()
    try:
        wait_until(lambda: not redis_answers(), timeout=10, what="Redis to stop")
        ids += submit(client, small_clip, JOBS_PER_SCENARIO - len(ids))  # 202 while the broker is down
        assert client.get("/readyz").status_code == 503
        wait_until(lambda: time.monotonic() - down_since >= 10, timeout=20, what="ten seconds of outage")
    finally:
        subprocess.run(
            ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
             "--save", "", "--appendonly", "no"],
            check=True,
        )  # fmt: skip
        wait_until(redis_answers, timeout=20, what="Redis to come back")
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, what="readiness to recover")
    # Once the workers are back on the broker, the very next health check sees them: it must not
    # spend an attempt on a connection that died with Redis.
    wait_until(
        lambda: worker_answers(crew.video.name) and worker_answers(crew.io.name),
        timeout=30,
        what="the workers to reconnect",
    )
    assert client.get("/api/v1/queue/health").json()["workers"]["video"] == [f"{crew.video.name}@{HOST}"]
    verify("redis-stopped-10s", client, sessions, ids, started, JOB_TIMEOUT)


def test_postgresql_restart_while_jobs_run(
    crew: Crew, client: ApiClient, sessions: sessionmaker[Session], small_clip: Path
) -> None:
    started = time.monotonic()
    ids = submit(client, small_clip, JOBS_PER_SCENARIO)
    wait_until(lambda: stage_started(sessions, ids, "transcode"), timeout=60, what="a transcode")
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True)
    verify("postgresql-restart", client, sessions, ids, started, JOB_TIMEOUT)


def test_duplicate_stage_messages_are_no_ops(
    crew: Crew, client: ApiClient, sessions: sessionmaker[Session], small_clip: Path
) -> None:
    started = time.monotonic()
    ids = submit(client, small_clip, JOBS_PER_SCENARIO)
    for job_id in ids:  # a second copy of every chain, racing the first
        assert dispatch(uuid.UUID(job_id), "fetch") is not None
    verify("duplicate-messages", client, sessions, ids, started, JOB_TIMEOUT)
    for job_id in ids:  # and once more after every stage finished
        assert dispatch(uuid.UUID(job_id), "transcode") is not None
    wait_until(
        lambda: crew.video.log().count("nothing to do") >= len(ids),
        timeout=60,
        what="late duplicates to be refused",
    )
    with sessions() as session:
        attempts = session.scalars(
            select(JobStage.attempts).where(
                JobStage.job_id.in_([uuid.UUID(i) for i in ids]), JobStage.name != "notify"
            )
        ).all()
    assert set(attempts) == {1}


def test_flaky_webhook_receiver_gets_exactly_one_success(
    crew: Crew,
    client: ApiClient,
    sessions: sessionmaker[Session],
    small_clip: Path,
    webhook_receiver: WebhookReceiver,
) -> None:
    started = time.monotonic()
    webhook_receiver.fail_first_per_id = 3
    ids = submit(client, small_clip, JOBS_PER_SCENARIO, {"webhook_url": webhook_receiver.url})
    verify("flaky-webhook", client, sessions, ids, started, JOB_TIMEOUT)

    def all_delivered() -> bool:
        with sessions() as session:
            ok = session.scalars(select(WebhookDelivery.job_id).where(WebhookDelivery.ok.is_(True))).all()
        return {str(i) for i in ok} >= set(ids)

    wait_until(all_delivered, timeout=120, what="every webhook to be delivered")
    with sessions() as session:
        rows = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.job_id.in_([uuid.UUID(i) for i in ids]))
        ).all()
    for job_id in ids:
        deliveries = sorted((r for r in rows if str(r.job_id) == job_id), key=lambda r: r.attempt)
        assert [d.status_code for d in deliveries] == [500, 500, 500, 200]
        assert sum(d.ok for d in deliveries) == 1
        assert len({d.webhook_id for d in deliveries}) == 1
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded"
        assert job["stages"][-1]["status"] == "succeeded"
