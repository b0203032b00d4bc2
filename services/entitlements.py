"""What each API key's jobs may ask for and use, set by operators with the key CLI.

A plain key may ask for `normal` and `low` priority, read no S3 source bucket, and analyse
only locally: nothing of a tenant's leaves the machine unless its key is granted `gemini`.
Quotas bound jobs queued or running at once and source bytes per day (None: no limit).
The checks on a request are pure; the quota checks read PostgreSQL, under a per-key
advisory lock so that concurrent submissions cannot both take the last place."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import BigInteger, Connection, cast, func, select
from sqlalchemy.orm import Session

from models import Job, JobStage
from services.errors import ConveyorError

PRIORITIES = ("high", "normal", "low")
ANALYSIS_BACKENDS = ("local", "gemini")
QUOTA_WINDOW = timedelta(days=1)
ACTIVE = ("queued", "running")


class NotEntitled(ConveyorError):
    """The key may not ask for this (403): priority_not_allowed, bucket_not_allowed,
    backend_not_allowed."""


class QuotaExceeded(ConveyorError):
    """The key has used its quota (429): active_jobs_quota_exceeded, daily_bytes_quota_exceeded."""


@dataclass(frozen=True)
class Entitlements:
    priorities: tuple[str, ...] = ("normal", "low")
    source_buckets: tuple[str, ...] = ()
    analysis_backends: tuple[str, ...] = ("local",)
    max_active_jobs: int | None = None
    max_source_bytes_per_day: int | None = None

    @property
    def has_quotas(self) -> bool:
        return self.max_active_jobs is not None or self.max_source_bytes_per_day is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
        }

    def check_request(self, source: dict[str, Any], options: dict[str, Any]) -> None:
        """Refuse what the key is not entitled to, before anything is recorded."""
        priority = options.get("priority", "normal")
        if priority not in self.priorities:
            raise NotEntitled(
                f"This key may not ask for priority {priority!r}; it may use {list(self.priorities)}.",
                code="priority_not_allowed",
            )
        backend = (options.get("analysis") or {}).get("backend", "local")
        if backend not in self.analysis_backends:
            raise NotEntitled(
                f"This key may not use the {backend!r} analysis backend; it may use"
                f" {list(self.analysis_backends)}.",
                code="backend_not_allowed",
            )
        if "s3" in source:
            bucket, key = source["s3"]["bucket"], source["s3"]["key"]
            if not bucket_granted(self.source_buckets, bucket, key):
                raise NotEntitled(f"This key may not read s3://{bucket}/{key}.", code="bucket_not_allowed")


def bucket_granted(grants: tuple[str, ...], bucket: str, key: str) -> bool:
    """A grant is a bucket ("ingest") or a bucket and a key prefix ("ingest/tenant-a/")."""
    for grant in grants:
        granted_bucket, _, prefix = grant.partition("/")
        if granted_bucket == bucket and key.startswith(prefix):
            return True
    return False


def _source_bytes() -> Any:
    """A job's source bytes: known at submission for an upload, from the fetch stage otherwise."""
    return func.coalesce(
        cast(JobStage.output["bytes"].astext, BigInteger),
        cast(Job.source["upload"]["bytes"].astext, BigInteger),
        0,
    )


def check_quotas(
    connection: Connection | Session, owner_id: uuid.UUID, entitlements: Entitlements, incoming_bytes: int
) -> None:
    """Refuse a new job the key's quotas leave no room for. Call inside the transaction that
    creates the job: it takes the key's advisory lock, held until that transaction ends.

    Source bytes of URL, S3 and generated sources are known once fetched, so a key may go over
    its daily bytes by the jobs it had in flight; then it is refused until the day rolls on."""
    connection.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(str(owner_id), 17))))
    if entitlements.max_active_jobs is not None:
        active = connection.execute(
            select(func.count()).select_from(Job).where(Job.owner_id == owner_id, Job.status.in_(ACTIVE))
        ).scalar_one()
        if active >= entitlements.max_active_jobs:
            raise QuotaExceeded(
                f"This key may have {entitlements.max_active_jobs} jobs queued or running at once; it has"
                f" {active}. Submit again when one ends.",
                code="active_jobs_quota_exceeded",
            )
    if entitlements.max_source_bytes_per_day is not None:
        used = connection.execute(
            select(func.coalesce(func.sum(_source_bytes()), 0))
            .select_from(Job)
            .outerjoin(JobStage, (JobStage.job_id == Job.id) & (JobStage.name == "fetch"))
            .where(Job.owner_id == owner_id, Job.created_at > func.now() - QUOTA_WINDOW)
        ).scalar_one()
        if used + incoming_bytes > entitlements.max_source_bytes_per_day:
            raise QuotaExceeded(
                f"This key may submit {entitlements.max_source_bytes_per_day} source bytes per 24 h; its jobs"
                f" of the last 24 h used {used}, and this one brings {incoming_bytes}.",
                code="daily_bytes_quota_exceeded",
            )
