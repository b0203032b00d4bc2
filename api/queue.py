"""Queue operations under /api/v1/queue: health (public), stats, failed jobs, retry, clean,
pause and resume (admin keys)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from flask import Blueprint, Flask, current_app, request
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session, sessionmaker

from api.db import db
from api.errors import ApiError
from api.jobs import retry_response
from api.openapi import operation
from api.responses import (
    CleanRequest,
    CleanResult,
    FailedPage,
    FailedQuery,
    JobOut,
    QueueControl,
    QueueHealth,
    QueueRequest,
    QueueStats,
    send,
)
from api.schemas import parse_model
from api.workers import (
    BROKER_ERRORS,
    PAUSE_REPLY_SECONDS,
    consumers_by_worker,
    start_consuming,
    stop_consuming,
    workers_by_queue,
)
from celeryconfig import MAINTENANCE_QUEUE, QUEUES, STAGE_QUEUES
from services.broker import queue_depths
from services.config import Settings
from services.health import Refreshed, check_database, check_redis, health_redis_client
from services.operations import delete_delivered_outputs, failed_jobs, jobs_to_clean
from services.queue_stats import job_totals, stage_stats, stats_to_dict
from services.queues import connect, mark_paused, paused_queues, take_paused
from services.workspace import Workspace
from services.workspace.keys import job_prefix

bp = Blueprint("queue", __name__, url_prefix="/queue")
log = logging.getLogger("conveyor.api")


def _settings() -> Settings:
    settings: Settings = current_app.extensions["conveyor.settings"]
    return settings


@contextmanager
def _redis() -> Iterator[redis.Redis]:
    """A Redis client for one request; Redis down becomes 503 unavailable, not a 500."""
    client = connect(_settings().redis_url)
    try:
        yield client
    except BROKER_ERRORS as exc:
        raise ApiError("unavailable", f"Redis did not answer: {exc}") from exc
    finally:
        client.close()


# How often each API process asks the workers what they consume, in the background; an
# answer older than a few rounds means the refresher is stuck, which is itself unhealthy.
QUEUE_HEALTH_REFRESH_SECONDS = 5.0
QUEUE_HEALTH_STALE_SECONDS = 3 * QUEUE_HEALTH_REFRESH_SECONDS + 2 * PAUSE_REPLY_SECONDS


def init_queue_health(app: Flask, settings: Settings) -> None:
    factory: sessionmaker[Session] = app.extensions["conveyor.sessions"]
    client = health_redis_client(settings.redis_url)

    def check() -> dict[str, Any]:
        checks = {"postgres": check_database(factory), "redis": check_redis(client)}
        up = checks["redis"]["ok"]
        # The maintenance queue too: without a worker on it, nothing lost is ever recovered.
        watched = [*QUEUES, MAINTENANCE_QUEUE]
        workers = workers_by_queue(watched, consumers_by_worker()) if up else {}
        try:
            paused = sorted(paused_queues(client)) if up else []
        except BROKER_ERRORS:
            paused = []
        unserved = [queue for queue in watched if queue not in paused and not workers.get(queue)]
        healthy = all(check["ok"] for check in checks.values()) and not unserved
        return {"healthy": healthy, "checks": checks, "workers": workers, "paused": paused}

    app.extensions["conveyor.queue_health"] = Refreshed(
        check, interval_seconds=QUEUE_HEALTH_REFRESH_SECONDS, first_wait_seconds=2 * PAUSE_REPLY_SECONDS
    )


@bp.get("/health")
@operation(
    "Are PostgreSQL and Redis reachable, and does every queue that is not paused have a worker?",
    access="public",
    tag="queue",
    responses={200: QueueHealth, 503: QueueHealth},
    description=(
        "Answered from a state each API process refreshes in the background every few seconds"
        " (`age_seconds` says how old it is), so a call costs no broadcast to the workers."
    ),
)
def health() -> ResponseReturnValue:
    refreshed: Refreshed[dict[str, Any]] = current_app.extensions["conveyor.queue_health"]
    state, age = refreshed.get()
    if state is None:
        body: dict[str, Any] = {
            "healthy": False,
            "checks": {},
            "workers": {},
            "paused": [],
            "age_seconds": None,
        }
    else:
        body = state | {"age_seconds": round(age, 1)}
        body["healthy"] = state["healthy"] and age <= QUEUE_HEALTH_STALE_SECONDS
    return send(QueueHealth, body, 200 if body["healthy"] else 503)


@bp.get("/stats")
@operation(
    "Per queue: waiting, active, recent outcomes and durations, workers.",
    tag="queue",
    access="admin",
    responses={200: QueueStats},
)
def stats() -> ResponseReturnValue:
    by_stage = stage_stats(db())
    totals = job_totals(db())
    client = connect(_settings().redis_url)
    try:
        depths: dict[str, int | None] = dict(queue_depths(client, QUEUES))
        paused = paused_queues(client)
    except BROKER_ERRORS:
        depths, paused = dict.fromkeys(QUEUES), {}
    finally:
        client.close()
    workers = workers_by_queue(list(QUEUES), consumers_by_worker())
    queues = {
        queue: {
            "stage": stage,
            "waiting": depths[queue],
            "workers": workers[queue],
            "paused": queue in paused,
            **stats_to_dict(by_stage[stage]),
        }
        for stage, queue in STAGE_QUEUES.items()
    }
    return send(QueueStats, {"queues": queues, "jobs": totals})


@bp.get("/failed")
@operation(
    "Failed jobs, newest first, with the failed stage, error and attempts.",
    tag="queue",
    access="admin",
    query=FailedQuery,
    responses={200: FailedPage},
)
def failed() -> ResponseReturnValue:
    query = parse_model(FailedQuery, request.args.to_dict())
    jobs, total = failed_jobs(db(), limit=query.limit, offset=query.offset)
    return send(FailedPage, {"jobs": jobs, "total": total, "limit": query.limit, "offset": query.offset})


@bp.post("/retry/<job_id>")
@operation(
    "Re-run a failed job from its failed stage, keeping what earlier stages produced.",
    tag="queue",
    access="admin",
    responses={202: JobOut},
    errors=(409,),
)
def retry(job_id: str) -> ResponseReturnValue:
    return retry_response(job_id)


@bp.post("/clean")
@operation(
    "Delete old ended jobs: rows and workspace files (delivered outputs only if asked).",
    tag="queue",
    access="admin",
    body=CleanRequest,
    responses={200: CleanResult},
)
def clean() -> ResponseReturnValue:
    order = parse_model(CleanRequest, request.get_json(silent=True))
    session = db()
    ids = jobs_to_clean(
        session, status=order.status, older_than_seconds=order.older_than_seconds, limit=order.limit
    )
    session.commit()
    # Objects go after the commit: a crash in between leaves only prefixes whose job no longer
    # exists, which the retention task removes.
    workspace: Workspace = current_app.extensions["conveyor.workspace"]
    for job_id in ids:
        workspace.remove(job_prefix(job_id))
    outputs = delete_delivered_outputs(_settings(), ids) if order.delete_outputs and ids else 0
    log.info("cleaned jobs", extra={"count": len(ids), "status": order.status, "outputs_deleted": outputs})
    return send(CleanResult, {"deleted": len(ids), "job_ids": ids, "outputs_deleted": outputs})


@bp.post("/pause")
@operation(
    "Make every worker stop consuming a queue (messages wait in the broker).",
    tag="queue",
    access="admin",
    body=QueueRequest,
    responses={200: QueueControl},
    errors=(503,),
)
def pause() -> ResponseReturnValue:
    queue = parse_model(QueueRequest, request.get_json(silent=True)).queue
    consuming = workers_by_queue([queue], consumers_by_worker(PAUSE_REPLY_SECONDS))[queue]
    stopped = stop_consuming(queue, consuming)
    with _redis() as client:
        mark_paused(client, queue, stopped)
    log.info("queue paused", extra={"queue": queue, "workers": stopped})
    return send(QueueControl, {"queue": queue, "paused": True, "workers": stopped})


@bp.post("/resume")
@operation(
    "Make the workers a pause stopped consume the queue again.",
    tag="queue",
    access="admin",
    body=QueueRequest,
    responses={200: QueueControl},
    errors=(503,),
)
def resume() -> ResponseReturnValue:
    queue = parse_model(QueueRequest, request.get_json(silent=True)).queue
    with _redis() as client:
        paused_on = take_paused(client, queue) or []
    started = start_consuming(queue, paused_on)
    log.info("queue resumed", extra={"queue": queue, "workers": started})
    return send(QueueControl, {"queue": queue, "paused": False, "workers": started})
