"""A model-based test of the stage contract: hypothesis drives claims, heartbeats, completions,
failures, requeues, cancels, releases, crashes, lease expiry (a clock moved by hand), broker
flushes, duplicate deliveries, operator retries and sweeps, from several simulated workers,
against the real PostgreSQL (a database of its own) and the real Redis, and checks after
every step:

* at most one live owner per stage, and a stale attempt changes nothing;
* a succeeded stage's output comes from exactly one attempt;
* a job reaches one terminal state and leaves it only through an operator's retry;
* no stage of a canceled job starts;
* every queued stage is on its way: its message is in the broker, or the sweeper will send it.

`make test` runs a few hundred examples; `make chaos` (CHAOS_LONG=1) thousands.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobEvent, JobStage, StageAttempt, make_engine, make_session_factory
from services.apikeys import create_key
from services.broker import EPOCH_KEY, queue_keys
from services.config import get_settings
from services.contract import (
    Claim,
    Dispatch,
    claim_stage,
    complete_stage,
    fail_stage,
    finish_cancel,
    max_attempts_for,
    renew_lease,
    request_cancel,
    requeue_stage,
)
from services.contract.recovery import release_worker_stages, sweep
from services.errors import FetchFailed
from services.jobs import create_job
from services.operations import retry_job
from tasks.pipeline import broker_client, dispatch
from tests.chaos import LONG
from tests.clocks import FixedClock
from tests.conftest import REDIS_OWNER_KEY, TEST_DB
from tests.fixtures import REPO, WorkerPool

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MODEL_DB = f"{TEST_DB}_model"
LEASE = 30
WORKERS = ("w1", "w2", "w3")
QUEUES = ("fetch", "video", "upload", "analyze", "notify")
ENDED = ("succeeded", "failed", "canceled")
EXAMPLES = 2000 if LONG else 200


def model_database_url() -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{MODEL_DB}"


def recreate_model_database() -> None:
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {MODEL_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {MODEL_DB}")
    config = Config(str(REPO / "alembic.ini"))
    config.attributes["configure_logger"] = False
    config.cmd_opts = argparse.Namespace(x=[f"url={model_database_url()}"])
    command.upgrade(config, "head")


@pytest.fixture(scope="module")
def model_sessions(database: str, worker_pool: WorkerPool) -> Iterator[sessionmaker[Session]]:
    worker_pool.stop_default()  # no real worker may take the simulated workers' messages
    recreate_model_database()
    engine = make_engine(model_database_url())
    yield make_session_factory(engine)
    engine.dispose()
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {MODEL_DB} WITH (FORCE)")


@dataclass
class World:
    sessions: sessionmaker[Session] | None = None
    owner_id: uuid.UUID | None = None


WORLD = World()


@dataclass
class SimulatedWorker:
    name: str
    claims: list[Claim] = field(default_factory=list)
    serial: int = 0

    def task_name(self) -> str:
        self.serial += 1
        return f"{self.name}:{self.serial}"


def message_stage(raw: bytes) -> tuple[uuid.UUID, str]:
    envelope = json.loads(raw)
    (job_id,), _, _ = json.loads(base64.b64decode(envelope["body"]))
    return uuid.UUID(job_id), str(envelope["headers"]["task"]).removeprefix("pipeline.")


class ContractMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        assert WORLD.sessions is not None
        self.sessions = WORLD.sessions
        self.broker = broker_client()
        self.broker.flushdb()
        self.broker.set(REDIS_OWNER_KEY, os.getpid())
        with self.sessions.begin() as session:
            session.execute(text("TRUNCATE jobs CASCADE"))
        self.clock = FixedClock()
        self.workers = {name: SimulatedWorker(name) for name in WORKERS}
        self.jobs: list[uuid.UUID] = []
        self.latest: dict[tuple[uuid.UUID, str], int] = {}  # newest attempt granted per stage
        self.terminal: dict[uuid.UUID, str] = {}
        self.cancel_accepted: set[uuid.UUID] = set()  # answered 202: must end canceled
        self.settings = get_settings()

    # --- helpers -------------------------------------------------------------------------

    def send(self, dispatches: list[Dispatch]) -> None:
        for sent in dispatches:
            assert dispatch(sent) is not None

    def stale(self, claim: Claim) -> bool:
        """Whether a newer attempt of the claim's stage was granted (it can change nothing)."""
        return self.latest.get((claim.job_id, claim.stage), 0) > claim.attempt

    def pick_claim(self, worker: str, index: int) -> Claim | None:
        claims = self.workers[worker].claims
        return claims.pop(index % len(claims)) if claims else None

    def messages(self) -> list[tuple[bytes, bytes]]:
        return [
            (key, raw)
            for queue in QUEUES
            for key in queue_keys(queue)
            for raw in self.broker.lrange(key, 0, -1)
        ]

    # --- rules ---------------------------------------------------------------------------

    @precondition(lambda self: len(self.jobs) < 4)
    @rule(sent=st.booleans(), webhook=st.booleans())
    def submit(self, sent: bool, webhook: bool) -> None:
        options = {"webhook_url": "https://receiver.example/hook"} if webhook else {}
        with self.sessions.begin() as session:
            assert WORLD.owner_id is not None
            created = create_job(
                session, owner_id=WORLD.owner_id, source={"url": "https://x/y.mp4"}, options=options
            )
        self.jobs.append(created.job.id)
        if sent:  # unsent: the API died between its commit and its send
            self.send([Dispatch(created.job.id, "fetch", "normal", created.message_id)])

    def has_messages(self) -> bool:
        return any(self.broker.llen(key) for queue in QUEUES for key in queue_keys(queue))

    def has_claims(self) -> bool:
        return any(simulated.claims for simulated in self.workers.values())

    def holder(self, index: int) -> str:
        holding = [name for name, simulated in self.workers.items() if simulated.claims]
        return holding[index % len(holding)]

    @precondition(has_messages)
    @rule(worker=st.sampled_from(WORKERS), index=st.integers(0, 1000))
    def deliver(self, worker: str, index: int) -> None:
        waiting = self.messages()
        if not waiting:
            return
        key, raw = waiting[index % len(waiting)]
        if not self.broker.lrem(key, 1, raw):
            return
        job_id, stage = message_stage(raw)
        simulated = self.workers[worker]
        with self.sessions.begin() as session:
            outcome = claim_stage(
                session,
                job_id,
                stage,
                worker=simulated.task_name(),
                lease_seconds=LEASE,
                max_attempts=max_attempts_for(stage, self.settings),
                clock=self.clock,
            )
        self.send(outcome.dispatches)
        if outcome.claim is not None:
            claim = outcome.claim
            assert claim.attempt > self.latest.get((job_id, stage), 0)
            self.latest[(job_id, stage)] = claim.attempt
            simulated.claims.append(claim)

    @precondition(has_messages)
    @rule(index=st.integers(0, 1000))
    def duplicate(self, index: int) -> None:
        waiting = self.messages()
        if waiting:
            key, raw = waiting[index % len(waiting)]
            self.broker.lpush(key, raw)

    @precondition(has_claims)
    @rule(index=st.integers(0, 1000))
    def heartbeat(self, index: int) -> None:
        worker = self.holder(index)
        claim = self.pick_claim(worker, index)
        if claim is None:
            return
        with self.sessions.begin() as session:
            ours = renew_lease(session, claim, lease_seconds=LEASE, progress=50.0, clock=self.clock)
            canceled = bool(session.scalar(select(Job.cancel_requested).where(Job.id == claim.job_id)))
        if self.stale(claim):
            assert not ours
        if not ours:
            return
        if canceled and claim.stage != "notify":
            with self.sessions.begin() as session:
                done = finish_cancel(session, claim, clock=self.clock)
            self.send(done.dispatches)
            return
        self.workers[worker].claims.append(claim)

    @precondition(has_claims)
    @rule(index=st.integers(0, 1000))
    def complete(self, index: int) -> None:
        worker = self.holder(index)
        claim = self.pick_claim(worker, index)
        if claim is None:
            return
        output = {"attempt": claim.attempt, "worker": claim.worker}
        with self.sessions.begin() as session:
            done = complete_stage(session, claim, output, clock=self.clock)
        if self.stale(claim):
            assert not done.applied
        self.send(done.dispatches)

    @precondition(has_claims)
    @rule(index=st.integers(0, 1000), transient=st.booleans(), delay=st.sampled_from([0, 5, 40]))
    def fail(self, index: int, transient: bool, delay: int) -> None:
        worker = self.holder(index)
        claim = self.pick_claim(worker, index)
        if claim is None:
            return
        with self.sessions.begin() as session:
            if transient and claim.tries < max_attempts_for(claim.stage, self.settings):
                error = FetchFailed("reset")
                done = requeue_stage(session, claim, error, delay_seconds=delay, clock=self.clock)
            else:
                done = fail_stage(session, claim, "fetch_failed", "gone", clock=self.clock)
        if self.stale(claim):
            assert not done.applied
        self.send(done.dispatches)

    @precondition(has_claims)
    @rule(index=st.integers(0, 1000))
    def crash(self, index: int) -> None:
        """kill -9: the worker's claims vanish with it; only their leases remain."""
        self.workers[self.holder(index)].claims.clear()

    @precondition(has_claims)
    @rule(index=st.integers(0, 1000))
    def release(self, index: int) -> None:
        """Graceful shutdown after the grace period: its stages go back, its work stops."""
        worker = self.holder(index)
        with self.sessions.begin() as session:
            released = release_worker_stages(session, f"{worker}:", clock=self.clock)
        self.workers[worker].claims.clear()
        self.send(released)

    @precondition(lambda self: bool(self.jobs))
    @rule(index=st.integers(0, 1000))
    def cancel(self, index: int) -> None:
        job_id = self.jobs[index % len(self.jobs)]
        with self.sessions.begin() as session:
            done = request_cancel(session, job_id, clock=self.clock)
        if done.applied:
            self.cancel_accepted.add(job_id)
        self.send(done.dispatches)

    @precondition(lambda self: bool(self.jobs))
    @rule(index=st.integers(0, 1000))
    def operator_retry(self, index: int) -> None:
        job_id = self.jobs[index % len(self.jobs)]
        with self.sessions.begin() as session:
            status = session.scalar(select(Job.status).where(Job.id == job_id))
            if status != "failed":
                return
            restart = retry_job(session, job_id)
        self.terminal.pop(job_id, None)
        self.send([restart])

    @rule(seconds=st.sampled_from([1, 6, LEASE + 1]))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def run_sweeper(self) -> None:
        sweep(self.sessions, self.broker, self.settings, send=dispatch, clock=self.clock)

    @precondition(has_messages)
    @rule(rarely=st.integers(0, 3))
    def flush_broker(self, rarely: int) -> None:
        if rarely:  # a broker losing its data is rarer than anything else here
            return
        self.broker.flushdb()
        self.broker.set(REDIS_OWNER_KEY, os.getpid())

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def contract_holds(self) -> None:
        if not hasattr(self, "jobs") or not self.jobs:
            return
        with self.sessions() as session:
            jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(self.jobs)))}
            stages = list(session.scalars(select(JobStage).where(JobStage.job_id.in_(self.jobs))))
            attempts = list(session.scalars(select(StageAttempt).where(StageAttempt.job_id.in_(self.jobs))))
            events = list(
                session.scalars(select(JobEvent).where(JobEvent.job_id.in_(self.jobs)).order_by(JobEvent.id))
            )
        self.check_owners(stages)
        self.check_outputs(stages, attempts)
        self.check_terminal_states(jobs, events)
        self.check_canceled_jobs_start_nothing(jobs, events)
        self.check_nothing_is_lost(jobs, stages)

    def check_owners(self, stages: list[JobStage]) -> None:
        rows = {(row.job_id, row.name): row for row in stages}
        for simulated in self.workers.values():
            for claim in simulated.claims:
                row = rows[(claim.job_id, claim.stage)]
                owns = row.status == "running" and (row.worker, row.attempts) == (claim.worker, claim.attempt)
                if owns:
                    assert not self.stale(claim)
        owners: dict[tuple[uuid.UUID, str], int] = {}
        for simulated in self.workers.values():
            for claim in simulated.claims:
                row = rows[(claim.job_id, claim.stage)]
                if row.status == "running" and (row.worker, row.attempts) == (claim.worker, claim.attempt):
                    owners[(claim.job_id, claim.stage)] = owners.get((claim.job_id, claim.stage), 0) + 1
        assert all(count == 1 for count in owners.values()), owners

    def check_outputs(self, stages: list[JobStage], attempts: list[StageAttempt]) -> None:
        for row in stages:
            # An operator's retry starts the stage afresh above its attempt floor: what an
            # attempt below it did (notify, say, for the failure that was retried) is history.
            winners = [
                a.attempt
                for a in attempts
                if (a.job_id, a.stage) == (row.job_id, row.name)
                and a.part is None
                and a.attempt > row.attempt_floor
                and a.outcome == "succeeded"
            ]
            if row.status == "succeeded":
                assert row.output is not None and winners == [row.output["attempt"]], (
                    row.name,
                    winners,
                    row.output,
                )
            else:
                assert winners == [], (row.name, row.status, winners)

    def check_terminal_states(self, jobs: dict[uuid.UUID, Job], events: list[JobEvent]) -> None:
        for job_id, job in jobs.items():
            if job_id in self.cancel_accepted and job.status in ENDED:
                assert job.status == "canceled", f"job {job_id} was canceled, yet ended {job.status}"
            if job.status in ENDED:
                assert self.terminal.setdefault(job_id, job.status) == job.status, (
                    self.terminal[job_id],
                    job.status,
                )
            else:
                assert job_id not in self.terminal, f"job {job_id} left {self.terminal.get(job_id)}"
            ends = 0
            for event in events:
                if event.job_id != job_id:
                    continue
                if event.type in ("job.succeeded", "job.failed", "job.canceled"):
                    ends += 1
                    assert ends == 1, f"job {job_id} ended twice without a retry"
                elif event.type == "job.retried":
                    ends = 0

    def check_canceled_jobs_start_nothing(self, jobs: dict[uuid.UUID, Job], events: list[JobEvent]) -> None:
        for job_id, job in jobs.items():
            if job.status != "canceled":
                continue
            seen_cancel = False
            for event in events:
                if event.job_id != job_id:
                    continue
                if event.type == "job.canceled":
                    seen_cancel = True
                elif seen_cancel and event.type == "stage.started":
                    assert event.stage == "notify", f"{event.stage} of canceled job {job_id} started"

    def check_nothing_is_lost(self, jobs: dict[uuid.UUID, Job], stages: list[JobStage]) -> None:
        in_broker = {raw_id for _, raw in self.messages() for raw_id in [json.loads(raw)["headers"]["id"]]}
        broker_lost_data = not self.broker.exists(EPOCH_KEY)
        by_job: dict[uuid.UUID, list[JobStage]] = {}
        for row in stages:
            by_job.setdefault(row.job_id, []).append(row)
        for job_id, job in jobs.items():
            rows = by_job[job_id]
            if job.status in ("queued", "running"):
                assert any(r.status in ("queued", "running") for r in rows if r.name != "notify"), (
                    f"live job {job_id} has no stage on its way: {[(r.name, r.status) for r in rows]}"
                )
            for row in rows:
                if row.status != "queued" or row.sent_at is None or broker_lost_data:
                    continue  # unsent: the sweeper sends it when due
                assert str(row.message_id) in in_broker, f"{row.name} of {job_id} is marked sent, but lost"


@pytest.fixture
def world(model_sessions: sessionmaker[Session]) -> World:
    WORLD.sessions = model_sessions
    if WORLD.owner_id is None:
        with model_sessions.begin() as session:
            key, _ = create_key(session, "model")
        WORLD.owner_id = key.id
    return WORLD


def test_the_stage_contract_holds_under_every_interleaving(world: World) -> None:
    ContractMachine.TestCase.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )
    ContractMachine.TestCase().runTest()
