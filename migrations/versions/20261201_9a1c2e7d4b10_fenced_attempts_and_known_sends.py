"""fenced attempts and known sends

The stage contract's holes (issue 13) need three things on the stage rows and one table:

* attempt_floor: an operator's retry used to reset attempts to 0, so attempt numbers repeated
  and could not fence anything. Attempts now only grow; the retry raises the floor instead.
* message_id and sent_at: the sweeper used to read every message of every queue to tell a
  lost stage from one waiting in a backlog. A stage row now names the message meant to run it,
  and is marked sent once the broker's log of sends says so; the sweeper reads only unmarked
  rows and expired leases, through two partial indexes that a backlog never enters.
* stage_attempts: one row per claim, with how it ended and whether its body ran to the end,
  so "done twice" is counted from executions, not from events.

Rows queued before this revision have no sent_at: the first sweep sends them once more, which
the claim makes harmless. The indexes are built concurrently (job_stages is the busiest table).

Revision ID: 9a1c2e7d4b10
Revises: 4bf3859c6a18
Create Date: 2026-12-01 17:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9a1c2e7d4b10"
down_revision: str | None = "4bf3859c6a18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_job_stages_unsent", ["available_at"], "status = 'queued' AND sent_at IS NULL"),
    ("ix_job_stages_leases", ["lease_until"], "status = 'running'"),
    ("ix_job_stages_message_id", ["message_id"], "message_id IS NOT NULL"),
)


def upgrade() -> None:
    op.add_column(
        "job_stages", sa.Column("attempt_floor", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("job_stages", sa.Column("message_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.add_column("job_stages", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "stage_attempts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("outcome", sa.String(length=16), server_default="running", nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("body_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_stage_attempts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_attempts")),
        sa.UniqueConstraint("job_id", "stage", "attempt", name="uq_stage_attempts_attempt"),
    )
    with op.get_context().autocommit_block():
        for name, columns, where in INDEXES:
            op.create_index(
                name,
                "job_stages",
                columns,
                unique=False,
                postgresql_where=sa.text(where),
                postgresql_concurrently=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, _, _ in INDEXES:
            op.drop_index(name, table_name="job_stages", postgresql_concurrently=True)
    op.drop_table("stage_attempts")
    op.drop_column("job_stages", "sent_at")
    op.drop_column("job_stages", "message_id")
    op.drop_column("job_stages", "attempt_floor")
