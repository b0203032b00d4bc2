"""Retention: what the workspace no longer needs, removed through the store itself.

Three kinds of leftovers, each found at a cost that follows what is due, not the number of
jobs ever run:

* an ended job's objects: jobs record when their workspace was cleaned
  (``jobs.workspace_cleaned_at``), and a partial index over ended jobs not cleaned yet hands
  over exactly those. A failed job's objects are kept WORKSPACE_KEEP_FAILED_SECONDS for
  inspection; a job with a stage still running (a cancel being carried out) waits.
* prefixes whose job never came to be (an API killed between storing an upload and committing
  its job, or a job row deleted by /queue/clean before its objects), and objects that came
  back after their job was cleaned (a stale attempt writing late). The scan reads one page of
  job prefixes per run, resuming where the last run stopped, and one query for their rows.
* incomplete uploads (a writer killed before its commit): invisible, but they hold storage.
  Listed by the store in one call; aborted once WORKSPACE_ABANDONED_SECONDS old.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobStage
from services.config import Settings
from services.workspace.base import Workspace
from services.workspace.keys import job_prefix

ENDED = ("succeeded", "failed", "canceled")
JOBS_PER_RUN = 200
PREFIXES_PER_SCAN = 500


@dataclass(frozen=True)
class Retention:
    cleaned: list[uuid.UUID]  # ended jobs whose objects were removed
    orphans: list[uuid.UUID]  # prefixes with no job row
    stragglers: list[uuid.UUID]  # objects found again under a job already cleaned
    aborted: int  # incomplete uploads aborted
    scan_after: uuid.UUID | None  # where the next scan resumes (None: from the start)


def clean_ended_jobs(
    session: Session, workspace: Workspace, settings: Settings, *, limit: int = JOBS_PER_RUN
) -> list[uuid.UUID]:
    """Remove the objects of ended jobs that are due, and record it, in the caller's
    transaction. The rows stay locked while their objects go (SKIP LOCKED: two cleaners never
    take the same job, and a retry of a failed job waits, then finds it cleaned)."""
    keep = timedelta(seconds=settings.workspace_keep_failed_seconds)
    still_running = exists().where(
        JobStage.job_id == Job.id, JobStage.status == "running", JobStage.name != "notify"
    )
    jobs = session.scalars(
        select(Job)
        .where(
            Job.workspace_cleaned_at.is_(None),
            Job.status.in_(ENDED),
            or_(Job.status != "failed", Job.finished_at < func.now() - keep),
            ~still_running,
        )
        .order_by(Job.finished_at)
        .limit(limit)
        .with_for_update(of=Job, skip_locked=True)
    ).all()
    for job in jobs:
        workspace.remove(job_prefix(job.id))
        job.workspace_cleaned_at = func.now()
    return [job.id for job in jobs]


def scan_for_leftovers(
    session: Session,
    workspace: Workspace,
    settings: Settings,
    *,
    after: uuid.UUID | None,
    limit: int = PREFIXES_PER_SCAN,
    now: datetime | None = None,
) -> tuple[list[uuid.UUID], list[uuid.UUID], uuid.UUID | None]:
    """One page of the workspace's job prefixes: (orphans removed, stragglers removed, where the
    next page starts). An orphan is removed only once its newest object is older than
    WORKSPACE_ABANDONED_SECONDS, so an upload whose job row is about to be committed stays."""
    jobs = workspace.job_prefixes(after, limit)
    if not jobs:
        return [], [], None
    cleaned = dict(session.execute(select(Job.id, Job.workspace_cleaned_at).where(Job.id.in_(jobs))).all())
    abandoned_before = (now or datetime.now(UTC)) - timedelta(seconds=settings.workspace_abandoned_seconds)
    orphans, stragglers = [], []
    for job_id in jobs:
        if job_id in cleaned:
            if cleaned[job_id] is not None:
                workspace.remove(job_prefix(job_id))
                stragglers.append(job_id)
            continue
        objects = workspace.objects(job_prefix(job_id))
        if all(stored.modified < abandoned_before for stored in objects):
            workspace.remove(job_prefix(job_id))
            orphans.append(job_id)
    return orphans, stragglers, jobs[-1] if len(jobs) == limit else None


def abort_abandoned_uploads(workspace: Workspace, settings: Settings, *, now: datetime | None = None) -> int:
    abandoned_before = (now or datetime.now(UTC)) - timedelta(seconds=settings.workspace_abandoned_seconds)
    aborted = 0
    for upload in workspace.incomplete_uploads():
        if upload.started < abandoned_before:
            workspace.abort_upload(upload)
            aborted += 1
    return aborted


def clean_workspace(
    sessions: sessionmaker[Session],
    workspace: Workspace,
    settings: Settings,
    *,
    scan_after: uuid.UUID | None,
    now: datetime | None = None,
) -> Retention:
    """One run of the retention task."""
    with sessions.begin() as session:
        cleaned = clean_ended_jobs(session, workspace, settings)
    with sessions() as session:
        orphans, stragglers, next_after = scan_for_leftovers(
            session, workspace, settings, after=scan_after, now=now
        )
    aborted = abort_abandoned_uploads(workspace, settings, now=now)
    return Retention(cleaned, orphans, stragglers, aborted, next_after)
