"""jobs workspace cleaned at

The workspace is an object store now, so finding what to clean by listing it would cost in
proportion to everything it holds. Each ended job records when its workspace objects were
removed; a partial index over ended jobs not cleaned yet hands the retention task exactly the
jobs that are due. Existing ended jobs start uncleaned (their folders may still be there) and
are worked through in batches. The index is built concurrently: jobs is busy.

Revision ID: b3f08c5e7d12
Revises: 9d2e61b0c4a7
Create Date: 2026-12-01 17:06:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b3f08c5e7d12"
down_revision: str | None = "9d2e61b0c4a7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("workspace_cleaned_at", sa.DateTime(timezone=True), nullable=True))
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_jobs_workspace_due",
            "jobs",
            ["finished_at"],
            unique=False,
            postgresql_where=sa.text(
                "workspace_cleaned_at IS NULL AND status IN ('succeeded', 'failed', 'canceled')"
            ),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_jobs_workspace_due", table_name="jobs", postgresql_concurrently=True)
    op.drop_column("jobs", "workspace_cleaned_at")
