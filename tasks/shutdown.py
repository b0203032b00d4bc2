"""Graceful shutdown: on SIGTERM a running stage may finish within the grace period; after
it, the worker releases its stages for others instead of letting their leases run out."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_shutting_down

from services.config import get_settings
from services.contract.recovery import release_worker_stages
from tasks.pipeline import dispatch_all
from tasks.runtime import session_factory

log = logging.getLogger("conveyor.shutdown")


def release_stages_of(nodename: str) -> int:
    with session_factory().begin() as session:
        released = release_worker_stages(session, f"{nodename}:")
    for stage in released:
        log.info("released stage on shutdown", extra={"job_id": str(stage.job_id), "stage": stage.stage})
    dispatch_all(released)
    return len(released)


@worker_shutting_down.connect
def _release_after_grace(sender: str, how: str = "", **_: Any) -> None:
    if how != "Warm":
        return
    grace = get_settings().shutdown_grace_seconds
    log.info("warm shutdown: running stages may finish", extra={"grace_seconds": grace, "worker": sender})
    # A daemon timer: if every stage finishes first, the process exits and the timer with it.
    timer = threading.Timer(grace, release_stages_of, args=(str(sender),))
    timer.daemon = True
    timer.start()
