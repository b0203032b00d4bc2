"""Retention through the object store: an ended job's objects go (a failed one's after its keep
period), prefixes whose job never came to be and objects that came back after cleaning go,
uploads never completed are aborted; and what is still needed stays. The suite's default
worker runs the same task from beat, so it is stopped while these tests look."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobStage
from services.apikeys import create_key
from services.config import Settings, get_settings
from services.jobs import create_job
from services.workspace import Workspace, open_workspace
from services.workspace.keys import attempt_prefix, job_prefix
from services.workspace.multipart import PART_BYTES
from services.workspace.retention import (
    abort_abandoned_uploads,
    clean_ended_jobs,
    scan_for_leftovers,
)
from tests.fixtures import ApiClient, WorkerPool

pytestmark = pytest.mark.integration


@pytest.fixture
def quiet(worker_pool: WorkerPool) -> None:
    """No other retention task at work (later tests get the default worker back from the pool)."""
    worker_pool.stop_default()


@pytest.fixture
def settings() -> Settings:
    return get_settings()


@pytest.fixture
def workspace(s3_server: str, settings: Settings) -> Iterator[Workspace]:
    """A workspace of its own (another prefix of the test bucket), so a scan sees only the
    prefixes these tests make."""
    own = settings.model_copy(
        update={"workspace_url": f"s3://conveyor-test-work/retention-{uuid.uuid4().hex}"}
    )
    made = open_workspace(own)
    yield made
    for job in made.job_prefixes(None, 10_000):
        made.remove(job_prefix(job))


def put(workspace: Workspace, tmp_path: Path, job_id: uuid.UUID) -> str:
    key = attempt_prefix(job_id, "fetch", 1) + "original"
    source = tmp_path / "object"
    source.write_bytes(b"media")
    workspace.put_file(source, key)
    return key


def new_job(
    session: Session, owner: uuid.UUID, status: str, finished_ago: timedelta | None = None
) -> uuid.UUID:
    job_id = create_job(session, owner_id=owner, source={"url": "http://127.0.0.1/x"}, options={}).job.id
    finished = None if finished_ago is None else datetime.now(UTC) - finished_ago
    session.execute(update(Job).where(Job.id == job_id).values(status=status, finished_at=finished))
    return job_id


def clean_until_done(
    sessions: sessionmaker[Session], workspace: Workspace, settings: Settings
) -> set[uuid.UUID]:
    """Run the due-jobs step until nothing is due (other tests' ended jobs are due too)."""
    cleaned: set[uuid.UUID] = set()
    while True:
        with sessions.begin() as session:
            batch = clean_ended_jobs(session, workspace, settings)
        if not batch:
            return cleaned
        cleaned |= set(batch)


def test_ended_jobs_go_failed_ones_after_their_keep_period(
    quiet: None, sessions: sessionmaker[Session], workspace: Workspace, settings: Settings, tmp_path: Path
) -> None:
    keep = timedelta(seconds=settings.workspace_keep_failed_seconds)
    with sessions.begin() as session:
        owner = create_key(session, "retention")[0].id
        due = {
            "succeeded": new_job(session, owner, "succeeded", timedelta(seconds=1)),
            "canceled": new_job(session, owner, "canceled", timedelta(seconds=1)),
            "failed long ago": new_job(session, owner, "failed", keep + timedelta(minutes=5)),
        }
        kept = {
            "failed just now": new_job(session, owner, "failed", timedelta(seconds=1)),
            "running": new_job(session, owner, "running"),
            "canceled, a stage still stopping": new_job(session, owner, "canceled", timedelta(seconds=1)),
        }
        session.execute(
            update(JobStage)
            .where(JobStage.job_id == kept["canceled, a stage still stopping"], JobStage.name == "transcode")
            .values(status="running")
        )
    keys = {job_id: put(workspace, tmp_path, job_id) for job_id in (*due.values(), *kept.values())}

    cleaned = clean_until_done(sessions, workspace, settings)

    assert set(due.values()) <= cleaned
    assert not set(kept.values()) & cleaned
    for job_id in due.values():
        assert not workspace.exists(job_prefix(job_id))
    for name, job_id in kept.items():
        assert workspace.read_bytes(keys[job_id]) == b"media", name
    with sessions() as session:
        marked = dict(session.execute(select(Job.id, Job.workspace_cleaned_at).where(Job.id.in_(keys))).all())
    assert all(marked[job_id] is not None for job_id in due.values())
    assert all(marked[job_id] is None for job_id in kept.values())
    # A cleaned job is never looked at again: the next run has nothing to do.
    with sessions.begin() as session:
        assert clean_ended_jobs(session, workspace, settings) == []


def test_finding_due_jobs_reads_only_the_index_of_jobs_not_cleaned(sessions: sessionmaker[Session]) -> None:
    """The task's cost follows what is due, not every job ever run: the partial index holds only
    ended jobs whose workspace is not cleaned yet, and the query can be answered from it."""
    with sessions.begin() as session:
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            session.execute(
                text(
                    "EXPLAIN SELECT id FROM jobs WHERE workspace_cleaned_at IS NULL"
                    " AND status IN ('succeeded', 'failed', 'canceled') ORDER BY finished_at LIMIT 200"
                )
            ).scalars()
        )
    assert "ix_jobs_workspace_due" in plan


def test_orphans_and_stragglers_go_live_jobs_and_fresh_uploads_stay(
    quiet: None, sessions: sessionmaker[Session], workspace: Workspace, settings: Settings, tmp_path: Path
) -> None:
    with sessions.begin() as session:
        owner = create_key(session, "leftovers")[0].id
        live = new_job(session, owner, "running")
        straggler = new_job(session, owner, "succeeded", timedelta(seconds=1))
        session.execute(update(Job).where(Job.id == straggler).values(workspace_cleaned_at=datetime.now(UTC)))
    orphan = uuid.uuid4()  # an upload whose job row was never committed
    for job_id in (live, straggler, orphan):
        put(workspace, tmp_path, job_id)

    with sessions() as session:
        orphans, stragglers, after = scan_for_leftovers(session, workspace, settings, after=None)
    # The orphan is fresh: its job row may be about to be committed.
    assert (orphans, stragglers, after) == ([], [straggler], None)
    assert workspace.exists(job_prefix(orphan)) and workspace.exists(job_prefix(live))
    assert not workspace.exists(job_prefix(straggler))

    later = datetime.now(UTC) + timedelta(seconds=settings.workspace_abandoned_seconds + 60)
    with sessions() as session:
        orphans, stragglers, _ = scan_for_leftovers(session, workspace, settings, after=None, now=later)
    assert (orphans, stragglers) == ([orphan], [])
    assert not workspace.exists(job_prefix(orphan))
    assert workspace.exists(job_prefix(live))
    assert workspace.job_prefixes(None, 100) == [live]


def test_the_scan_pages_through_the_workspace(
    sessions: sessionmaker[Session], workspace: Workspace, settings: Settings, tmp_path: Path
) -> None:
    orphans = sorted((uuid.uuid4() for _ in range(5)), key=str)
    for job_id in orphans:
        put(workspace, tmp_path, job_id)
    later = datetime.now(UTC) + timedelta(seconds=settings.workspace_abandoned_seconds + 60)
    removed, after, pages = [], None, 0
    while True:
        with sessions() as session:
            found, _, after = scan_for_leftovers(
                session, workspace, settings, after=after, limit=2, now=later
            )
        removed += found
        pages += 1
        if after is None:
            break
    assert removed == orphans and pages == 3


def test_uploads_never_completed_are_aborted_once_abandoned(workspace: Workspace, settings: Settings) -> None:
    key = attempt_prefix(uuid.uuid4(), "fetch", 1) + "original"
    writer = workspace.open_writer(key)
    writer.write(b"\0" * (PART_BYTES + 1))  # one part sent: the upload exists, invisible

    def open_uploads() -> list[str]:
        return [upload.key for upload in workspace.incomplete_uploads() if upload.key == key]

    assert open_uploads() == [key]
    assert abort_abandoned_uploads(workspace, settings) == 0
    later = datetime.now(UTC) + timedelta(seconds=settings.workspace_abandoned_seconds + 60)
    assert abort_abandoned_uploads(workspace, settings, now=later) >= 1
    assert open_uploads() == [] and not workspace.exists(key)


def test_a_failed_job_whose_workspace_was_cleaned_cannot_be_retried(
    quiet: None, client: ApiClient, sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    """The retry check asks the workspace for what the retry would read (here: the upload)."""
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    job_id = client.upload(bad).json()["id"]
    with sessions.begin() as session:
        # As if fetch had failed a day ago, past the keep period.
        finished = datetime.now(UTC) - timedelta(seconds=settings.workspace_keep_failed_seconds + 60)
        session.execute(update(Job).where(Job.id == job_id).values(status="failed", finished_at=finished))
        session.execute(
            update(JobStage)
            .where(JobStage.job_id == job_id, JobStage.name == "fetch")
            .values(status="failed")
        )
    workspace = open_workspace(settings)
    assert workspace.exists(job_prefix(uuid.UUID(job_id)))
    clean_until_done(sessions, workspace, settings)
    assert not workspace.exists(job_prefix(uuid.UUID(job_id)))
    answer = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert answer.status_code == 409
    assert "cleaned away" in answer.json()["error"]["message"]
