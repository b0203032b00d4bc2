"""Periodic maintenance run by beat: recover lost stages (the workspace's retention is
tasks/retention.py)."""

import logging

import redis

from services.broker import stages_in_broker
from services.config import get_settings
from services.recovery import recover_lost_stages
from tasks import app
from tasks.pipeline import dispatch
from tasks.runtime import session_factory

log = logging.getLogger("conveyor.sweeper")


@app.task(name="maintenance.sweep", acks_late=False, ignore_result=True)
def sweep() -> dict[str, int]:
    settings = get_settings()
    queues = [queue.name for queue in app.conf.task_queues]
    with redis.Redis.from_url(settings.redis_url) as client:
        in_broker = stages_in_broker(client, queues)
    with session_factory().begin() as session:
        recovery = recover_lost_stages(session, settings, in_broker)
    for lost in recovery.to_dispatch:
        log.info("re-dispatching lost stage", extra={"job_id": str(lost.job_id), "stage": lost.stage})
        dispatch(lost.job_id, lost.stage, lost.priority)
    for lost in recovery.failed:
        log.warning("stage gave up: worker lost", extra={"job_id": str(lost.job_id), "stage": lost.stage})
        dispatch(lost.job_id, "notify", lost.priority)
    return {
        "redispatched": len(recovery.to_dispatch),
        "failed": len(recovery.failed),
    }
