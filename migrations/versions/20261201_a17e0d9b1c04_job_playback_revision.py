"""job playback revision

Playback URLs carry an HMAC token of the job and this number; raising it revokes every link
given out so far. A constant default rewrites nothing.

Revision ID: a17e0d9b1c04
Revises: a17e0d9b1c03
Create Date: 2026-12-01 16:53:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a17e0d9b1c04"
down_revision: str | None = "a17e0d9b1c03"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("playback_revision", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("jobs", "playback_revision")
