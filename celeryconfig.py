"""Celery's configuration in one place: queues, routes, reliability, beat.

Values that operators tune come from the one settings object (services.config), so a
worker, the API and beat always agree.
"""

from kombu import Exchange, Queue

from services.config import get_settings

_settings = get_settings()

QUEUES = ("fetch", "video", "upload", "analyze", "notify")
# The sweeper's own queue: a fetch backlog, or an operator pausing fetch, never holds it up.
MAINTENANCE_QUEUE = "maintenance"
STAGE_QUEUES = {
    "fetch": "fetch",
    "transcode": "video",
    "upload": "upload",
    "analyze": "analyze",
    "notify": "notify",
}

broker_url = _settings.redis_url
# kombu's Redis transport, but a worker that loses Redis while holding unacked messages
# reconnects instead of exiting (services/broker_transport.py).
broker_transport = "services.broker_transport:Transport"
# Workers retry the broker for ever at start-up: Redis may come up after them.
broker_connection_retry_on_startup = True
# Stage results live in PostgreSQL; Celery's result backend would be a second truth.
task_ignore_result = True

imports = (
    "tasks.fetch",
    "tasks.transcode",
    "tasks.upload",
    "tasks.analyze",
    "tasks.notify",
    "tasks.maintenance",
    "tasks.retention",
    "tasks.shutdown",
    "tasks.pauses",
    "tasks.webhooks",
    "tasks.idempotency",
)
# One direct exchange per queue, so a message routed to `video` lands in `video` alone.
task_queues = [
    Queue(name, Exchange(name, type="direct"), routing_key=name) for name in (*QUEUES, MAINTENANCE_QUEUE)
]
task_default_queue = "fetch"
# Route by explicit task name, so renaming a module never strands queued messages.
task_routes = {f"pipeline.{stage}": {"queue": queue} for stage, queue in STAGE_QUEUES.items()} | {
    # A transcode's parts go where the transcode does: every video host takes parts of one job.
    "pipeline.transcode_part": {"queue": STAGE_QUEUES["transcode"]},
    "maintenance.*": {"queue": MAINTENANCE_QUEUE},
    # Webhook attempts (retries, redeliveries) run where the notify stage does.
    "webhooks.*": {"queue": "notify"},
}

# Acknowledge after the stage ran: a worker that dies mid-stage leaves the message to redeliver.
task_acks_late = True
# A worker killed by a signal (OOM, SIGKILL) gives its message back instead of dropping it.
task_reject_on_worker_lost = True
# Long stages: a worker holds one message at a time, so idle workers get the rest.
worker_prefetch_multiplier = 1
# Redis gives a message back to the queue when its worker has not acknowledged it within the
# visibility timeout: a message a killed worker took but never started is back that soon.
# It need not outlast a stage: a running stage's message delivered again is refused by the
# claim. Each worker looks for such messages every unacked_restore_interval seconds.
# A worker on several queues serves them in turn ("round_robin", kombu's default): "priority"
# would serve a later queue only once every earlier one is empty, so a fetch backlog would
# starve transcodes. Message priorities still order each queue (priority_steps).
broker_transport_options = {
    "visibility_timeout": _settings.broker_visibility_timeout_seconds,
    "unacked_restore_interval": min(10, _settings.broker_visibility_timeout_seconds),
    "unacked_restore_throttle": 1,
    "queue_order_strategy": "round_robin",
    "priority_steps": [0, 3, 6, 9],
    "socket_connect_timeout": 2,
}
# The API answers 202 even with Redis down (the sweeper sends later), so it must not hang on connect.
broker_connection_timeout = 2
# Messages sent without a priority (none of ours) wait behind high, beside normal.
task_default_priority = 3
# Events let Flower and /metrics see tasks as they run.
worker_send_task_events = True
# A fresh process per 100 tasks bounds what a leak in a codec library can cost.
worker_max_tasks_per_child = 100

beat_schedule = {
    # A periodic task not taken within its interval is dropped: the next one does the same
    # work, and a maintenance worker coming back must not run a pile of stale ones.
    "sweep-stages": {
        "task": "maintenance.sweep",
        "schedule": _settings.sweep_interval_seconds,
        "options": {"expires": _settings.sweep_interval_seconds},
    },
    # Webhook messages due for an attempt; the schedule's first retry is seconds away.
    "send-webhooks": {
        "task": "maintenance.send_webhooks",
        "schedule": _settings.webhook_dispatch_seconds,
        "options": {"expires": _settings.webhook_dispatch_seconds},
    },
    # Idempotency keys answer for a day; older ones are deleted.
    "expire-idempotency-keys": {"task": "maintenance.expire_idempotency_keys", "schedule": 3600.0},
    # Ended jobs' workspace objects, orphans and abandoned uploads (tasks/retention.py); a run
    # not taken in time is dropped likewise.
    "clean-workspace": {
        "task": "maintenance.clean_workspace",
        "schedule": _settings.workspace_clean_interval_seconds,
        "options": {"expires": _settings.workspace_clean_interval_seconds},
    },
}
