"""A queue paused by an operator stays paused on a worker that (re)starts meanwhile: Celery
keeps cancel_consumer only in a worker's memory, so the worker re-reads the pause record."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.signals import worker_ready

from services.config import get_settings
from services.queues import connect, mark_paused, paused_queues

log = logging.getLogger("conveyor.pauses")


@worker_ready.connect
def _honour_paused_queues(sender: Any, **_: Any) -> None:
    try:
        client = connect(get_settings().redis_url)
        paused = paused_queues(client)
    except redis.RedisError:
        log.warning("cannot read paused queues; consuming every queue given", exc_info=True)
        return
    consuming = {queue.name for queue in sender.task_consumer.queues}
    for queue in sorted(consuming & set(paused)):
        sender.cancel_task_queue(queue)
        mark_paused(client, queue, [sender.hostname])
        log.info("queue paused by an operator; not consuming it", extra={"queue": queue})
