"""A cancel racing a claim on the real PostgreSQL never deadlocks: every transition locks the
job's row before its stage rows. The race is made exact: the claim is held right after its
first statement until the cancel is seen waiting on a lock, then let go."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session, sessionmaker

from models import ApiKey
from services.apikeys import create_key
from services.contract import claim_stage, request_cancel
from services.jobs import create_job, get_job
from tasks.runtime import engine
from tests.fixtures import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def owner(sessions: sessionmaker[Session]) -> ApiKey:
    with sessions.begin() as session:
        key, _ = create_key(session, "lock-order")
    return key


def waiting_on_a_lock(sessions: sessionmaker[Session], pid: int) -> bool:
    with sessions() as session:
        kind = session.scalar(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        )
    return kind == "Lock"


def test_a_cancel_racing_a_claim_waits_for_it_instead_of_deadlocking(
    sessions: sessionmaker[Session], owner: ApiKey
) -> None:
    with sessions.begin() as session:
        job_id = create_job(
            session, owner_id=owner.id, source={"url": "http://127.0.0.1/x"}, options={}
        ).job.id
    first_statement_done, go_on = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    claimed: list[object] = []

    def claim() -> None:
        try:
            with engine().connect() as connection:

                def pause(*_: Any) -> None:
                    if not first_statement_done.is_set():
                        first_statement_done.set()
                        go_on.wait(timeout=30)

                event.listen(connection, "after_cursor_execute", pause)
                with Session(bind=connection) as session, session.begin():
                    outcome = claim_stage(
                        session, job_id, "fetch", worker="w1", lease_seconds=30, max_attempts=3
                    )
                    claimed.append(outcome.claim)
        except BaseException as exc:
            errors.append(exc)

    claimer = threading.Thread(target=claim)
    claimer.start()
    assert first_statement_done.wait(timeout=30)
    canceled: list[bool] = []

    def cancel() -> None:
        try:
            with engine().connect() as connection:
                pids.append(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
                connection.commit()  # so that the session's transaction is its own, and commits
                with Session(bind=connection) as session, session.begin():
                    canceled.append(request_cancel(session, job_id).applied)
        except BaseException as exc:
            errors.append(exc)

    pids: list[int] = []
    canceler = threading.Thread(target=cancel)
    canceler.start()
    wait_until(lambda: pids and waiting_on_a_lock(sessions, pids[0]), timeout=30, what="the cancel to wait")
    go_on.set()
    claimer.join(timeout=30)
    canceler.join(timeout=30)
    assert errors == []  # on the old lock order, PostgreSQL aborted one of them: deadlock detected
    assert claimed and claimed[0] is not None and canceled == [True]
    with sessions() as session:
        job = get_job(session, job_id)
        # The claim came first, so the running stage ends the job at its next heartbeat.
        assert job is not None and job.cancel_requested and job.status == "running"
