"""Periodic retention of the workspace, run by beat: ended jobs' objects, orphans, and
uploads that were never completed (services.workspace.retention decides)."""

from __future__ import annotations

import logging
import uuid

import redis

from services.config import get_settings
from services.workspace.retention import clean_workspace as clean
from tasks import app
from tasks.runtime import session_factory, workspace

log = logging.getLogger("conveyor.retention")

# Where the scan for orphans resumes; lost with a flushed Redis, it starts over, which is harmless.
SCAN_AFTER_KEY = "conveyor:workspace-scan-after"


def _scan_after(client: redis.Redis) -> uuid.UUID | None:
    try:
        value = client.get(SCAN_AFTER_KEY)
        return uuid.UUID(value.decode()) if value else None
    except (redis.RedisError, ValueError):
        return None


@app.task(name="maintenance.clean_workspace", acks_late=False, ignore_result=True)
def clean_workspace() -> dict[str, int]:
    settings = get_settings()
    with redis.Redis.from_url(settings.redis_url) as client:
        retention = clean(session_factory(), workspace(), settings, scan_after=_scan_after(client))
        try:
            if retention.scan_after is None:
                client.delete(SCAN_AFTER_KEY)
            else:
                client.set(SCAN_AFTER_KEY, str(retention.scan_after))
        except redis.RedisError:
            log.warning("cannot record where the workspace scan stopped", exc_info=True)
    for job_id in retention.orphans:
        log.info("removed workspace objects of a job that does not exist", extra={"job_id": str(job_id)})
    for job_id in retention.stragglers:
        log.info("removed workspace objects written after the job was cleaned", extra={"job_id": str(job_id)})
    return {
        "cleaned": len(retention.cleaned),
        "orphans": len(retention.orphans),
        "stragglers": len(retention.stragglers),
        "aborted": retention.aborted,
    }
