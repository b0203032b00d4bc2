"""metric counters kept by triggers

/metrics counted jobs by status and every succeeded stage's duration with full scans at each
scrape. Triggers now keep those counts in metric_counts in the very transactions that change
a job's status or finish a stage (whoever runs them), so a scrape sums a few dozen rows.
Each backend adds to its own shard (pid % 8): concurrent submissions do not queue on one
row. The triggers are deferred to commit, so a counter row is locked only while its
transaction commits, after every other lock it takes: counting adds no deadlock. The buckets below are services/metrics.py's STAGE_BUCKETS; a test checks they agree.
Existing rows are counted once here.

Revision ID: a17e0d9b1c06
Revises: a17e0d9b1c05
Create Date: 2026-12-01 16:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a17e0d9b1c06"
down_revision: str | None = "a17e0d9b1c05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUCKETS = "ARRAY[0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]::float8[]"


def upgrade() -> None:
    op.create_table(
        "metric_counts",
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.Float(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("metric", "label", "shard", name=op.f("pk_metric_counts")),
    )
    op.execute(
        """
        CREATE FUNCTION conveyor_count(metric text, label text, delta double precision) RETURNS void
        LANGUAGE sql AS $$
            INSERT INTO metric_counts (metric, label, shard, value)
            VALUES (metric, label, pg_backend_pid() % 8, delta)
            ON CONFLICT (metric, label, shard) DO UPDATE SET value = metric_counts.value + EXCLUDED.value
        $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION conveyor_stage_bucket(seconds double precision) RETURNS text
        LANGUAGE sql IMMUTABLE AS $$
            SELECT coalesce(
                (SELECT bound::text FROM unnest({BUCKETS}) AS bound WHERE seconds <= bound ORDER BY bound LIMIT 1),
                '+Inf'
            )
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION conveyor_count_job_status() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN PERFORM conveyor_count('jobs', OLD.status, -1); END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN PERFORM conveyor_count('jobs', NEW.status, 1); END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION conveyor_count_stage_duration() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            seconds double precision := extract(epoch FROM NEW.finished_at - NEW.started_at);
        BEGIN
            PERFORM conveyor_count('stage_duration', NEW.name || ':' || conveyor_stage_bucket(seconds), 1);
            PERFORM conveyor_count('stage_duration', NEW.name || ':' || 'sum', seconds);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER jobs_count_status AFTER INSERT OR DELETE ON jobs
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION conveyor_count_job_status()
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER jobs_count_status_change AFTER UPDATE OF status ON jobs
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION conveyor_count_job_status()
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER job_stages_count_duration AFTER UPDATE OF status ON job_stages
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (
            NEW.status = 'succeeded' AND OLD.status IS DISTINCT FROM 'succeeded'
            AND NEW.started_at IS NOT NULL AND NEW.finished_at IS NOT NULL
        )
        EXECUTE FUNCTION conveyor_count_stage_duration()
        """
    )
    op.execute(
        """
        INSERT INTO metric_counts (metric, label, shard, value)
        SELECT 'jobs', status, 0, count(*) FROM jobs GROUP BY status
        UNION ALL
        SELECT 'stage_duration', name || ':' || bucket, 0, count(*)
        FROM (
            SELECT name, conveyor_stage_bucket(extract(epoch FROM finished_at - started_at)) AS bucket
            FROM job_stages WHERE status = 'succeeded' AND started_at IS NOT NULL AND finished_at IS NOT NULL
        ) AS finished GROUP BY name, bucket
        UNION ALL
        SELECT 'stage_duration', name || ':' || 'sum', 0, sum(extract(epoch FROM finished_at - started_at))
        FROM job_stages WHERE status = 'succeeded' AND started_at IS NOT NULL AND finished_at IS NOT NULL
        GROUP BY name
        UNION ALL
        SELECT 'webhook_attempts', CASE WHEN ok THEN 'delivered' ELSE 'failed' END, 0, count(*)
        FROM webhook_deliveries GROUP BY ok
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER job_stages_count_duration ON job_stages")
    op.execute("DROP TRIGGER jobs_count_status_change ON jobs")
    op.execute("DROP TRIGGER jobs_count_status ON jobs")
    op.execute("DROP FUNCTION conveyor_count_stage_duration()")
    op.execute("DROP FUNCTION conveyor_count_job_status()")
    op.execute("DROP FUNCTION conveyor_stage_bucket(double precision)")
    op.execute("DROP FUNCTION conveyor_count(text, text, double precision)")
    op.drop_table("metric_counts")
