"""Periodic maintenance run by beat on the `maintenance` queue: recover lost stages (the
workspace's retention is tasks/retention.py). Its own queue, so a fetch backlog or a paused
stage queue never holds recovery up."""

import logging

from services.config import get_settings
from services.contract.recovery import sweep as sweep_stages
from tasks import app
from tasks.pipeline import broker_client, dispatch
from tasks.runtime import session_factory

log = logging.getLogger("conveyor.sweeper")


@app.task(name="maintenance.sweep", acks_late=False, ignore_result=True)
def sweep() -> dict[str, int]:
    settings = get_settings()
    report = sweep_stages(session_factory(), broker_client(), settings, send=dispatch)
    if report.redispatched or report.failed or report.canceled or report.forgotten:
        log.info("sweep recovered stages", extra=report.as_dict())
    return report.as_dict()
