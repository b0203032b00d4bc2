"""What the sweeper removes from the workspace: folders of ended jobs, and folders whose job
never came to be, but never a folder whose job row is still about to be committed."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from models import Job
from services.apikeys import create_key
from services.config import get_settings
from services.jobs import create_job
from services.recovery import ORPHAN_FOLDER_GRACE, workspace_jobs_to_remove
from services.workspace import Workspace

pytestmark = pytest.mark.integration


def folder(workspace: Workspace, job_id: uuid.UUID, *, age_seconds: float = 0) -> None:
    source = workspace.source_dir(job_id)
    source.mkdir(parents=True)
    (source / "clip.mp4").write_bytes(b"x")
    changed = time.time() - age_seconds
    os.utime(workspace.job_dir(job_id), (changed, changed))


def test_a_fresh_folder_without_its_row_yet_is_kept(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    with sessions.begin() as session:
        owner, _ = create_key(session, "cleanup")
        running = create_job(
            session, owner_id=owner.id, source={"url": "http://127.0.0.1/a"}, options={}
        ).job.id
        succeeded = create_job(
            session, owner_id=owner.id, source={"url": "http://127.0.0.1/b"}, options={}
        ).job.id
        session.execute(update(Job).where(Job.id == succeeded).values(status="succeeded"))
    uploading, abandoned = uuid.uuid4(), uuid.uuid4()  # no rows: an upload mid-submit, a crashed one
    for job_id in (running, succeeded, uploading):
        folder(workspace, job_id)
    folder(workspace, abandoned, age_seconds=ORPHAN_FOLDER_GRACE.total_seconds() + 60)

    folders = workspace.job_folders()
    assert set(folders) == {running, succeeded, uploading, abandoned}
    with sessions() as session:
        removable = workspace_jobs_to_remove(session, folders, get_settings())
    assert sorted(removable) == sorted([succeeded, abandoned])
