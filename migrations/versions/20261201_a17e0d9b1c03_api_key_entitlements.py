"""api key entitlements

What each key's jobs may ask for: priorities (a plain key: normal and low), S3 source buckets,
analysis backends (only local unless granted), and quotas (jobs queued or running at once,
source bytes per day; NULL is no limit). Existing keys get the defaults.

Revision ID: a17e0d9b1c03
Revises: a17e0d9b1c02
Create Date: 2026-12-01 16:52:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "a17e0d9b1c03"
down_revision: str | None = "a17e0d9b1c02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column(
            "priorities",
            postgresql.ARRAY(sa.String(length=16)),
            server_default=sa.text("'{normal,low}'::varchar[]"),
            nullable=False,
        ),
    )
    op.add_column(
        "api_keys",
        sa.Column(
            "source_buckets", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False
        ),
    )
    op.add_column(
        "api_keys",
        sa.Column(
            "analysis_backends",
            postgresql.ARRAY(sa.String(length=16)),
            server_default=sa.text("'{local}'::varchar[]"),
            nullable=False,
        ),
    )
    op.add_column("api_keys", sa.Column("max_active_jobs", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("max_source_bytes_per_day", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    for column in ("max_source_bytes_per_day", "max_active_jobs", "analysis_backends", "source_buckets", "priorities"):
        op.drop_column("api_keys", column)
