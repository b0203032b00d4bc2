"""stage priority rank and the line index

A stage's place in line was counted by joining every queued stage to its job to read the
priority out of the options, which made each submission cost time in proportion to the
backlog. The rank now sits on the stage row (it never changes after submission) and a
partial index over queued stages holds the line in the order Redis serves it.

Adding a column with a constant default rewrites nothing (PostgreSQL 11+); only stages of
high and low priority jobs are touched by the backfill, and the index is built concurrently.

Revision ID: 4bf3859c6a18
Revises: 7ce247096b9c
Create Date: 2026-11-28 07:40:23.746016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4bf3859c6a18"
down_revision: str | None = "7ce247096b9c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "job_stages",
        sa.Column("priority_rank", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
    )
    op.execute(
        """
        UPDATE job_stages AS stage
        SET priority_rank = CASE job.options ->> 'priority' WHEN 'high' THEN 0 ELSE 2 END
        FROM jobs AS job
        WHERE job.id = stage.job_id AND job.options ->> 'priority' IN ('high', 'low')
        """
    )
    # Built without blocking writes (job_stages is the busiest table): CONCURRENTLY cannot run
    # inside a transaction, so this step commits what came before and runs on its own.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_job_stages_line",
            "job_stages",
            ["name", "priority_rank", "available_at", "id"],
            unique=False,
            postgresql_where=sa.text("status = 'queued'"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_job_stages_line", table_name="job_stages", postgresql_concurrently=True)
    op.drop_column("job_stages", "priority_rank")
