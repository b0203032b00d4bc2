"""Which job folders the workspace no longer needs (the sweeper removes them)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from models import Job
from services.config import Settings

# A folder appears before its job row does: an upload is moved into its job's folder, then the
# row is committed. A folder with no row is only an orphan once it is older than this.
ORPHAN_FOLDER_GRACE = timedelta(hours=1)


def workspace_jobs_to_remove(
    session: Session, folders: dict[uuid.UUID, datetime], settings: Settings
) -> list[uuid.UUID]:
    """Of the job folders in the workspace (with when each last changed), those no longer
    needed: ended jobs, except failed ones still inside their keep period (kept for
    inspection), and folders whose job never came to be, once past ORPHAN_FOLDER_GRACE."""
    if not folders:
        return []
    keep = timedelta(seconds=settings.workspace_keep_failed_seconds)
    ended = session.scalars(
        select(Job.id).where(
            Job.id.in_(folders),
            or_(
                Job.status.in_(("succeeded", "canceled")),
                and_(Job.status == "failed", Job.finished_at < func.now() - keep),
            ),
        )
    ).all()
    known = set(session.scalars(select(Job.id).where(Job.id.in_(folders))).all())
    orphaned_before = datetime.now(UTC) - ORPHAN_FOLDER_GRACE
    orphans = [
        job_id for job_id, changed in folders.items() if job_id not in known and changed < orphaned_before
    ]
    return list(ended) + orphans
