"""stage resume state

A fetch stage waiting for a Veo generation kept the operation's name in a file beside the
source, which only a host mounting the same folder could read. It now lives on the stage's
row, written by the running attempt alone, so any host's next attempt resumes the same paid
operation. A nullable column without a default rewrites nothing.

Revision ID: 9d2e61b0c4a7
Revises: 9a1c2e7d4b10
Create Date: 2026-12-01 17:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9d2e61b0c4a7"
down_revision: str | None = "9a1c2e7d4b10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("job_stages", sa.Column("resume_state", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column("job_stages", "resume_state")
