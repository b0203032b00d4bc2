"""A worker that takes a message while PostgreSQL is unreachable (restarting, failing over)
neither drops it nor runs the stage unclaimed: it tries the claim again for a while, then gives
the message back to the broker. An acknowledged message would be lost for good, since the
stage's row says it was sent and the sweeper trusts that. The outage is a real TCP relay in
front of the real PostgreSQL that drops every connection and refuses new ones."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import StageAttempt
from tests.conftest import TEST_DB
from tests.fixtures import ApiClient, WorkerProcess, queue_taken_off, start_worker, stop_worker, wait_until
from tests.media import make_clip
from tests.throttle import Throttle, throttled

pytestmark = pytest.mark.integration


@pytest.fixture
def fetch_behind_a_relay(workers: WorkerProcess) -> Iterator[tuple[Throttle, WorkerProcess]]:
    """The `fetch` queue served alone by a worker that reaches PostgreSQL through a relay, and
    gives a claim one second of retries before it hands the message back."""
    with throttled(("127.0.0.1", 5432), 100 * 1024 * 1024) as link, queue_taken_off("fetch", workers.name):
        env = {
            "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{link.port}/{TEST_DB}",
            "DATABASE_RETRY_SECONDS": "1",
        }
        worker = start_worker("relayed-fetch", "fetch", concurrency=1, env=env)
        try:
            yield link, worker
        finally:
            link.mend()
            stop_worker(worker)


def test_a_claim_during_a_database_outage_gives_its_message_back(
    fetch_behind_a_relay: tuple[Throttle, WorkerProcess],
    client: ApiClient,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    link, worker = fetch_behind_a_relay
    link.cut()
    job_id = client.upload(make_clip(tmp_path / "clip.mp4", seconds=1)).json()["id"]
    wait_until(
        lambda: worker.log().count("the message goes back to the broker") >= 2,
        timeout=60,
        what="the claim to fail and its message to come back, twice",
    )
    link.mend()
    job = client.wait_for_job(job_id, timeout=120)
    assert job["status"] == "succeeded", job
    with sessions() as session:
        of_the_job = StageAttempt.job_id == uuid.UUID(job_id)
        fetches = session.scalars(select(StageAttempt).where(of_the_job, StageAttempt.stage == "fetch")).all()
    # Only the claim that got through counts: the refused ones changed nothing.
    assert [(attempt.attempt, attempt.outcome) for attempt in fetches] == [(1, "succeeded")]
