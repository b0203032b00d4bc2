"""The sweeper on the real PostgreSQL and Redis: it leaves a backlog whose messages the broker
holds alone, and sends what was never sent, what the broker lost, retries whose delay has
passed and stages whose worker died, at a cost that does not grow with the backlog.

Other tests' rows share this database, so every assertion is about this test's own jobs."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from models import ApiKey, JobStage
from services.apikeys import create_key
from services.broker import queue_keys
from services.config import get_settings
from services.contract import Claim, Dispatch, claim_stage, request_cancel, requeue_stage
from services.contract.recovery import SweepReport, sweep
from services.errors import FetchFailed
from services.jobs import create_job, get_job
from tasks.pipeline import dispatch
from tasks.runtime import engine
from tests.clocks import FixedClock
from tests.conftest import REDIS_OWNER_KEY
from tests.fixtures import WorkerPool

pytestmark = pytest.mark.integration

LEASE = 30


@pytest.fixture
def broker(worker_pool: WorkerPool) -> Iterator[redis.Redis]:
    worker_pool.stop_default()  # no worker may take the messages, and no other sweeper may run
    client = redis.Redis.from_url(get_settings().redis_url)
    client.flushdb()
    client.set(REDIS_OWNER_KEY, os.getpid())
    yield client
    client.flushdb()
    client.set(REDIS_OWNER_KEY, os.getpid())


@pytest.fixture(scope="module")
def owner(sessions: sessionmaker[Session]) -> ApiKey:
    with sessions.begin() as session:
        key, _ = create_key(session, "sweeper-tests")
    return key


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


def new_jobs(sessions: sessionmaker[Session], owner: ApiKey, count: int, *, send: bool) -> list[Dispatch]:
    with sessions.begin() as session:
        created = [
            create_job(session, owner_id=owner.id, source={"url": "http://127.0.0.1/x.mp4"}, options={})
            for _ in range(count)
        ]
    dispatches = [Dispatch(c.job.id, "fetch", "normal", c.message_id) for c in created]
    if send:
        for sent in dispatches:
            assert dispatch(sent) is not None
    return dispatches


def messages_for(broker: redis.Redis, queue: str, job_ids: set[uuid.UUID]) -> list[str]:
    """Task ids of the messages waiting in `queue` for these jobs."""
    found = []
    for key in queue_keys(queue):
        for raw in broker.lrange(key, 0, -1):
            message = json.loads(raw)
            (job_id,), _, _ = json.loads(base64.b64decode(message["body"]))
            if uuid.UUID(job_id) in job_ids:
                found.append(message["headers"]["id"])
    return found


def run_sweep(sessions: sessionmaker[Session], broker: redis.Redis, clock: FixedClock) -> SweepReport:
    return sweep(sessions, broker, get_settings(), send=dispatch, clock=clock)


def row(sessions: sessionmaker[Session], job_id: uuid.UUID, stage: str = "fetch") -> JobStage:
    with sessions() as session:
        return session.scalars(
            select(JobStage).where(JobStage.job_id == job_id, JobStage.name == stage)
        ).one()


def test_a_backlog_whose_messages_the_broker_holds_is_only_marked(
    sessions: sessionmaker[Session], broker: redis.Redis, owner: ApiKey, clock: FixedClock
) -> None:
    backlog = new_jobs(sessions, owner, 20, send=True)
    clock.advance(3600)  # long past every grace period
    run_sweep(sessions, broker, clock)
    ids = {d.job_id for d in backlog}
    assert sorted(messages_for(broker, "fetch", ids)) == sorted(str(d.message_id) for d in backlog)
    assert all(row(sessions, d.job_id).sent_at is not None for d in backlog)
    run_sweep(sessions, broker, clock)
    assert len(messages_for(broker, "fetch", ids)) == len(backlog)  # never sent twice


def test_a_stage_never_sent_is_sent_once_its_grace_has_passed(
    sessions: sessionmaker[Session], broker: redis.Redis, owner: ApiKey, clock: FixedClock
) -> None:
    (unsent,) = new_jobs(sessions, owner, 1, send=False)  # the API died between commit and send
    clock.at = row(sessions, unsent.job_id).available_at  # type: ignore[assignment]
    run_sweep(sessions, broker, clock)
    assert messages_for(broker, "fetch", {unsent.job_id}) == []  # its sender may still be at it
    clock.advance(get_settings().sweep_grace_seconds + 1)
    run_sweep(sessions, broker, clock)
    (resent,) = messages_for(broker, "fetch", {unsent.job_id})
    assert resent != str(unsent.message_id) and resent == str(row(sessions, unsent.job_id).message_id)
    run_sweep(sessions, broker, clock)
    assert row(sessions, unsent.job_id).sent_at is not None
    assert len(messages_for(broker, "fetch", {unsent.job_id})) == 1


def test_a_broker_that_lost_its_data_gets_every_queued_stage_again(
    sessions: sessionmaker[Session], broker: redis.Redis, owner: ApiKey, clock: FixedClock
) -> None:
    queued = new_jobs(sessions, owner, 5, send=True)
    run_sweep(sessions, broker, clock)
    assert all(row(sessions, d.job_id).sent_at is not None for d in queued)
    broker.flushdb()  # FLUSHALL, or a restart without persistence
    broker.set(REDIS_OWNER_KEY, os.getpid())
    report = run_sweep(sessions, broker, clock)
    assert report.forgotten >= len(queued)
    assert len(messages_for(broker, "fetch", {d.job_id for d in queued})) == len(queued)


def test_a_retry_is_sent_when_its_delay_has_passed_and_not_before(
    sessions: sessionmaker[Session], broker: redis.Redis, owner: ApiKey, clock: FixedClock
) -> None:
    (job,) = new_jobs(sessions, owner, 1, send=False)
    with sessions.begin() as session:
        claimed = claim_stage(
            session, job.job_id, "fetch", worker="w1", lease_seconds=LEASE, max_attempts=3, clock=clock
        ).claim
        assert claimed is not None
        assert requeue_stage(session, claimed, FetchFailed("reset"), delay_seconds=60, clock=clock)
    clock.advance(30)
    run_sweep(sessions, broker, clock)
    assert messages_for(broker, "fetch", {job.job_id}) == []
    clock.advance(31)
    run_sweep(sessions, broker, clock)
    assert len(messages_for(broker, "fetch", {job.job_id})) == 1


def claim_and_lose(sessions: sessionmaker[Session], job: Dispatch, clock: FixedClock, worker: str) -> Claim:
    with sessions.begin() as session:
        claimed = claim_stage(
            session, job.job_id, "fetch", worker=worker, lease_seconds=LEASE, max_attempts=3, clock=clock
        ).claim
    assert claimed is not None
    clock.advance(LEASE + 1)  # the worker died: its lease runs out
    return claimed


def test_a_dead_workers_stage_is_sent_again_until_its_attempts_are_used_up(
    sessions: sessionmaker[Session], broker: redis.Redis, owner: ApiKey, clock: FixedClock
) -> None:
    (job,) = new_jobs(sessions, owner, 1, send=False)
    for attempt in (1, 2):
        claim_and_lose(sessions, job, clock, f"dead-{attempt}")
        run_sweep(sessions, broker, clock)
        assert row(sessions, job.job_id).status == "queued"
        assert len(messages_for(broker, "fetch", {job.job_id})) == attempt
    claim_and_lose(sessions, job, clock, "dead-3")
    run_sweep(sessions, broker, clock)
    lost = row(sessions, job.job_id)
    assert (lost.status, lost.error_code) == ("failed", "worker_lost")
    with sessions() as session:
        found = get_job(session, job.job_id)
        assert found is not None and (found.status, found.error_code) == ("failed", "worker_lost")


def test_a_canceled_job_whose_worker_died_is_ended_by_the_sweeper(
    sessions: sessionmaker[Session], broker: redis.Redis, owner: ApiKey, clock: FixedClock
) -> None:
    (job,) = new_jobs(sessions, owner, 1, send=False)
    with sessions.begin() as session:
        assert claim_stage(
            session, job.job_id, "fetch", worker="doomed", lease_seconds=LEASE, max_attempts=3, clock=clock
        ).claim
        assert not request_cancel(session, job.job_id, clock=clock).canceled
    clock.advance(LEASE + 1)
    run_sweep(sessions, broker, clock)
    with sessions() as session:
        found = get_job(session, job.job_id)
        assert found is not None and found.status == "canceled"
    assert messages_for(broker, "fetch", {job.job_id}) == []


def test_a_sweep_costs_the_same_whatever_the_backlog(
    sessions: sessionmaker[Session], broker: redis.Redis, owner: ApiKey, clock: FixedClock
) -> None:
    """Counted in statements, not seconds: the old sweeper read every queued message."""
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    def settle() -> None:
        # Until a sweep finds nothing to do: what other tests left is sent, then marked.
        for _ in range(5):
            report = run_sweep(sessions, broker, clock)
            if not (report.marked or report.redispatched or report.failed or report.canceled):
                return
        raise AssertionError("the sweeper never settled")

    settle()
    event.listen(engine(), "before_cursor_execute", count)
    try:
        run_sweep(sessions, broker, clock)
        without = len(statements)
        new_jobs(sessions, owner, 300, send=True)
        settle()  # marks the backlog sent
        statements.clear()
        run_sweep(sessions, broker, clock)
        with_backlog = len(statements)
    finally:
        event.remove(engine(), "before_cursor_execute", count)
    assert with_backlog == without
