"""indexes for per-key quotas and event streams

A key's jobs by creation time (its job list, its daily byte quota) replace the plain owner
index; a partial index holds each key's queued and running jobs (its concurrency quota);
events by (job, id) replace the plain job index, so reading a job's events after the last
one sent is one index seek. Built concurrently: these are the busiest tables.

Revision ID: a17e0d9b1c05
Revises: a17e0d9b1c04
Create Date: 2026-12-01 16:54:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a17e0d9b1c05"
down_revision: str | None = "a17e0d9b1c04"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_jobs_owner_id_created_at", "jobs", ["owner_id", "created_at"], postgresql_concurrently=True
        )
        op.create_index(
            "ix_jobs_active_owner",
            "jobs",
            ["owner_id"],
            postgresql_where=sa.text("status IN ('queued', 'running')"),
            postgresql_concurrently=True,
        )
        op.drop_index("ix_jobs_owner_id", table_name="jobs", postgresql_concurrently=True)
        op.create_index(
            "ix_job_events_job_id_id", "job_events", ["job_id", "id"], postgresql_concurrently=True
        )
        op.drop_index("ix_job_events_job_id", table_name="job_events", postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_job_events_job_id", "job_events", ["job_id"], postgresql_concurrently=True)
        op.drop_index("ix_job_events_job_id_id", table_name="job_events", postgresql_concurrently=True)
        op.create_index("ix_jobs_owner_id", "jobs", ["owner_id"], postgresql_concurrently=True)
        op.drop_index("ix_jobs_active_owner", table_name="jobs", postgresql_concurrently=True)
        op.drop_index("ix_jobs_owner_id_created_at", table_name="jobs", postgresql_concurrently=True)
