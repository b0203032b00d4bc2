"""transcode parts

Issue 15: a transcode is planned in parts that any video host may take, each under the same
claim, lease, heartbeat and fencing as a stage. A part is a row of job_parts with the stage
contract's columns; the sweeper reads its own two partial indexes on it, as on job_stages.
stage_attempts records the attempts of parts too: its attempt numbers are unique per stage,
or per part.

Revision ID: b3c4d5e6f701
Revises: a17e0d9b1c06
Create Date: 2026-12-01 19:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b3c4d5e6f701"
down_revision: str | None = "a17e0d9b1c06"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_parts",
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("start_seconds", sa.Float(), nullable=False),
        sa.Column("end_seconds", sa.Float(), nullable=True),
        sa.Column("span_seconds", sa.Float(), nullable=False),
        sa.Column("first_segment", sa.Integer(), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("priority_rank", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("attempt_floor", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("progress", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_parts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_parts")),
        sa.UniqueConstraint("job_id", "index", name="uq_job_parts_job_id_index"),
    )
    op.create_index(
        "ix_job_parts_unsent",
        "job_parts",
        ["available_at"],
        postgresql_where=sa.text("status = 'queued' AND sent_at IS NULL"),
    )
    op.create_index(
        "ix_job_parts_leases", "job_parts", ["lease_until"], postgresql_where=sa.text("status = 'running'")
    )
    op.create_index(
        "ix_job_parts_message_id",
        "job_parts",
        ["message_id"],
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )
    op.add_column("stage_attempts", sa.Column("part", sa.Integer(), nullable=True))
    op.drop_constraint("uq_stage_attempts_attempt", "stage_attempts", type_="unique")
    op.create_index(
        "uq_stage_attempts_attempt",
        "stage_attempts",
        ["job_id", "stage", "attempt"],
        unique=True,
        postgresql_where=sa.text("part IS NULL"),
    )
    op.create_index(
        "uq_stage_attempts_part_attempt",
        "stage_attempts",
        ["job_id", "part", "attempt"],
        unique=True,
        postgresql_where=sa.text("part IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_stage_attempts_part_attempt", table_name="stage_attempts")
    op.drop_index("uq_stage_attempts_attempt", table_name="stage_attempts")
    op.execute("DELETE FROM stage_attempts WHERE part IS NOT NULL")
    op.create_unique_constraint("uq_stage_attempts_attempt", "stage_attempts", ["job_id", "stage", "attempt"])
    op.drop_column("stage_attempts", "part")
    op.drop_table("job_parts")
