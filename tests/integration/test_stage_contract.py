"""The stage contract on the real PostgreSQL, with a clock the tests move: one claim wins,
attempts fence every transition, leases expire, delays hold, cancels end jobs once."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import ApiKey, JobPart, JobStage, StageAttempt
from services.apikeys import create_key
from services.contract import (
    Claim,
    Dispatch,
    claim_part,
    claim_stage,
    complete_stage,
    fail_stage,
    release_stage,
    renew_lease,
    request_cancel,
    requeue_stage,
    start_parts,
)
from services.contract.parts import SOUND, VIDEO, PartPlan
from services.errors import FetchFailed
from services.jobs import create_job, get_job, job_to_dict
from services.operations import retry_job
from tests.clocks import FixedClock

pytestmark = pytest.mark.integration

LEASE = 30


@pytest.fixture(scope="module")
def owner(sessions: sessionmaker[Session]) -> ApiKey:
    with sessions.begin() as session:
        key, _ = create_key(session, "contract-tests")
    return key


@pytest.fixture
def job_id(sessions: sessionmaker[Session], owner: ApiKey) -> uuid.UUID:
    with sessions.begin() as session:
        job = create_job(session, owner_id=owner.id, source={"url": "http://127.0.0.1/x.mp4"}, options={})
        return job.job.id


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


def claim(
    sessions: sessionmaker[Session],
    clock: FixedClock,
    job_id: uuid.UUID,
    stage: str = "fetch",
    worker: str = "w1",
) -> Claim | None:
    with sessions.begin() as session:
        outcome = claim_stage(
            session, job_id, stage, worker=worker, lease_seconds=LEASE, max_attempts=3, clock=clock
        )
    return outcome.claim


def refusal(sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID, stage: str) -> str | None:
    with sessions.begin() as session:
        outcome = claim_stage(
            session, job_id, stage, worker="w9", lease_seconds=LEASE, max_attempts=3, clock=clock
        )
    assert outcome.claim is None
    return outcome.refused


def stage_row(sessions: sessionmaker[Session], job_id: uuid.UUID, stage: str) -> JobStage:
    with sessions() as session:
        return session.scalars(
            select(JobStage).where(JobStage.job_id == job_id, JobStage.name == stage)
        ).one()


def job_status(sessions: sessionmaker[Session], job_id: uuid.UUID) -> str:
    with sessions() as session:
        job = get_job(session, job_id)
        assert job is not None
        return job.status


def attempt_outcomes(sessions: sessionmaker[Session], job_id: uuid.UUID, stage: str) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(
                select(StageAttempt.outcome)
                .where(StageAttempt.job_id == job_id, StageAttempt.stage == stage)
                .order_by(StageAttempt.attempt)
            )
        )


def test_only_one_claim_wins_and_a_pending_stage_cannot_be_claimed(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    first = claim(sessions, clock, job_id)
    assert first is not None and first.attempt == 1
    assert refusal(sessions, clock, job_id, "fetch") == "leased"  # duplicate delivery while it runs
    assert refusal(sessions, clock, job_id, "transcode") == "not_reached"
    assert job_status(sessions, job_id) == "running"
    assert attempt_outcomes(sessions, job_id, "fetch") == ["running"]


def test_complete_records_output_and_queues_the_next_stage_with_a_message(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    first = claim(sessions, clock, job_id)
    assert first is not None
    with sessions.begin() as session:
        done = complete_stage(session, first, {"path": "jobs/x/fetch/1/original"}, clock=clock)
    assert done.applied and not done.canceled
    (next_message,) = done.dispatches
    transcode = stage_row(sessions, job_id, "transcode")
    assert (transcode.status, transcode.message_id, transcode.sent_at) == (
        "queued",
        next_message.message_id,
        None,
    )
    assert next_message.stage == "transcode"
    assert stage_row(sessions, job_id, "fetch").output == {"path": "jobs/x/fetch/1/original"}
    assert refusal(sessions, clock, job_id, "fetch") == "finished"  # a redelivery does nothing
    assert attempt_outcomes(sessions, job_id, "fetch") == ["succeeded"]


def test_a_stale_attempt_changes_nothing_after_a_takeover(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    stale = claim(sessions, clock, job_id, worker="paused")
    assert stale is not None
    clock.advance(LEASE + 1)
    live = claim(sessions, clock, job_id, worker="alive")
    assert live is not None and live.attempt == 2
    with sessions.begin() as session:
        assert not renew_lease(session, stale, lease_seconds=LEASE, progress=50, clock=clock)
        assert not requeue_stage(session, stale, FetchFailed("reset"), delay_seconds=0, clock=clock).applied
        assert release_stage(session, stale, clock=clock) is None
        assert not fail_stage(session, stale, "invalid_media", "stale verdict", clock=clock).applied
        assert not complete_stage(session, stale, {"from": "paused"}, clock=clock).applied
    row = stage_row(sessions, job_id, "fetch")
    assert (row.status, row.worker, row.attempts, row.error_code) == ("running", "alive", 2, None)
    assert job_status(sessions, job_id) == "running"
    with sessions.begin() as session:
        assert renew_lease(session, live, lease_seconds=LEASE, progress=50, clock=clock)
        assert complete_stage(session, live, {"from": "alive"}, clock=clock).applied
    assert stage_row(sessions, job_id, "fetch").output == {"from": "alive"}
    # The paused attempt was lost; its late completion is kept as what it was: discarded work.
    assert attempt_outcomes(sessions, job_id, "fetch") == ["discarded", "succeeded"]


def test_a_stale_failure_cannot_fail_a_succeeded_stage(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    stale = claim(sessions, clock, job_id, worker="paused")
    assert stale is not None
    clock.advance(LEASE + 1)
    live = claim(sessions, clock, job_id, worker="alive")
    assert live is not None
    with sessions.begin() as session:
        assert complete_stage(session, live, {"ok": True}, clock=clock).applied
    with sessions.begin() as session:
        assert not fail_stage(session, stale, "transcode_failed", "late", clock=clock).applied
    assert stage_row(sessions, job_id, "fetch").status == "succeeded"
    assert job_status(sessions, job_id) == "running"


def test_attempts_are_bounded_and_an_operator_retry_gives_fresh_ones_with_new_numbers(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    for attempt in (1, 2, 3):
        claimed = claim(sessions, clock, job_id, worker=f"w{attempt}")
        assert claimed is not None and claimed.attempt == attempt
        clock.advance(LEASE + 1)
    assert refusal(sessions, clock, job_id, "fetch") == "exhausted"
    with sessions.begin() as session:
        assert fail_stage(
            session, Claim(job_id, "fetch", 3, "w3"), "fetch_failed", "gone", clock=clock
        ).applied
    with sessions.begin() as session:
        restart = retry_job(session, job_id)
    assert restart.stage == "fetch"
    again = claim(sessions, clock, job_id, worker="w4")
    assert again is not None and (again.attempt, again.tries) == (4, 1)


def test_a_transient_failure_waits_for_its_delay_in_the_database(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    first = claim(sessions, clock, job_id)
    assert first is not None
    with sessions.begin() as session:
        assert requeue_stage(
            session, first, FetchFailed("connection reset"), delay_seconds=60, clock=clock
        ).applied
    row = stage_row(sessions, job_id, "fetch")
    assert (row.status, row.error_code, row.message_id) == ("queued", "fetch_failed", None)
    assert refusal(sessions, clock, job_id, "fetch") == "not_due"  # an early message claims nothing
    clock.advance(61)
    second = claim(sessions, clock, job_id)
    assert second is not None and (second.attempt, second.tries) == (2, 2)
    assert attempt_outcomes(sessions, job_id, "fetch") == ["retrying", "running"]


def test_a_permanent_failure_fails_the_job_with_its_code(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    first = claim(sessions, clock, job_id)
    assert first is not None
    with sessions.begin() as session:
        assert fail_stage(session, first, "invalid_media", "not a video", clock=clock).applied
    with sessions() as session:
        job = get_job(session, job_id)
        assert job is not None
        shown = job_to_dict(job)
    assert shown["status"] == "failed"
    assert shown["error"] == {"code": "invalid_media", "message": "not a video"}
    assert shown["stage"] == "fetch"
    assert stage_row(sessions, job_id, "notify").status == "skipped"  # no webhook_url


def test_release_counts_the_attempt_and_sends_the_stage_again(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    first = claim(sessions, clock, job_id)
    assert first is not None
    with sessions.begin() as session:
        released = release_stage(session, first, clock=clock)
    assert released is not None
    row = stage_row(sessions, job_id, "fetch")
    assert (row.status, row.attempts, row.message_id) == ("queued", 1, released.message_id)
    successor = claim(sessions, clock, job_id, worker="w2")
    assert successor is not None and successor.attempt == 2
    assert attempt_outcomes(sessions, job_id, "fetch") == ["released", "running"]


def test_cancel_of_a_queued_job_ends_it_at_once(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    with sessions.begin() as session:
        requested = request_cancel(session, job_id, clock=clock)
    assert requested.applied and requested.canceled
    assert refusal(sessions, clock, job_id, "fetch") == "job_ended"
    assert job_status(sessions, job_id) == "canceled"
    assert [stage_row(sessions, job_id, s).status for s in ("fetch", "transcode")] == ["canceled", "skipped"]
    with sessions.begin() as session:
        assert not request_cancel(session, job_id, clock=clock).applied  # it has ended


def test_a_stage_finishing_after_a_cancel_ends_the_job_canceled_not_succeeded(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    running = claim(sessions, clock, job_id)
    assert running is not None
    with sessions.begin() as session:
        requested = request_cancel(session, job_id, clock=clock)
    assert requested.applied and not requested.canceled  # the running stage ends it
    with sessions.begin() as session:
        done = complete_stage(session, running, {"late": True}, clock=clock)
    assert done.canceled and not done.applied
    assert job_status(sessions, job_id) == "canceled"
    assert stage_row(sessions, job_id, "fetch").status == "canceled"
    assert stage_row(sessions, job_id, "transcode").status == "skipped"
    assert attempt_outcomes(sessions, job_id, "fetch") == ["canceled"]


def test_a_claim_refused_by_a_cancel_ends_the_job_whose_worker_died(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    dead = claim(sessions, clock, job_id, worker="dead")
    assert dead is not None
    with sessions.begin() as session:
        assert not request_cancel(session, job_id, clock=clock).canceled  # its lease is still live
    clock.advance(LEASE + 1)
    assert refusal(sessions, clock, job_id, "fetch") == "canceled"  # a redelivered message
    assert job_status(sessions, job_id) == "canceled"
    assert attempt_outcomes(sessions, job_id, "fetch") == ["canceled"]


def queued_parts(sessions: sessionmaker[Session], dispatches: list[Dispatch]) -> list[tuple[str, int]]:
    ids = [d.part_id for d in dispatches if d.part_id is not None]
    with sessions() as session:
        rows = {row.id: row for row in session.scalars(select(JobPart).where(JobPart.id.in_(ids)))}
    return [(rows[part_id].kind, rows[part_id].index) for part_id in ids]


def test_parts_are_queued_sound_first_then_by_index_and_again_so_on_a_retry(
    sessions: sessionmaker[Session], clock: FixedClock, job_id: uuid.UUID
) -> None:
    """The sound is the longest part (the whole source), so it goes first, to run beside the
    video parts; on an operator's retry the parts that did not succeed go in the same order,
    whatever order the database returns their rows in."""
    fetched = claim(sessions, clock, job_id)
    assert fetched is not None
    with sessions.begin() as session:
        complete_stage(session, fetched, {"path": "jobs/x/fetch/1/original"}, clock=clock)
    # The plan lists the sound last, as plan_parts does.
    plans = [PartPlan(i, VIDEO, 60.0 * i, 60.0 * (i + 1), 60.0, 15 * i) for i in range(3)]
    plans.append(PartPlan(3, SOUND, 0.0, None, 180.0, 0))
    expected = [(SOUND, 3), (VIDEO, 0), (VIDEO, 1), (VIDEO, 2)]
    planning = claim(sessions, clock, job_id, "transcode")
    assert planning is not None
    with sessions.begin() as session:
        first = start_parts(session, planning, plans, {}, clock=clock)
    assert queued_parts(sessions, first.dispatches) == expected

    video_zero = first.dispatches[1].part_id
    assert video_zero is not None
    with sessions.begin() as session:
        taken = claim_part(session, video_zero, worker="w1", lease_seconds=LEASE, max_attempts=1, clock=clock)
        assert taken.claim is not None
        assert fail_stage(session, taken.claim, "transcode_failed", "broken", clock=clock).applied
    assert job_status(sessions, job_id) == "failed"
    with sessions.begin() as session:
        assert retry_job(session, job_id).stage == "transcode"
    replanning = claim(sessions, clock, job_id, "transcode")
    assert replanning is not None
    with sessions.begin() as session:
        again = start_parts(session, replanning, plans, {}, clock=clock)
    assert queued_parts(sessions, again.dispatches) == expected
