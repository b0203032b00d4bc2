"""A job's events as a Server-Sent Events stream, read from job_events until the job ends."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobEvent

ENDED = ("succeeded", "failed", "canceled")
# How long a browser waits before reconnecting (it then sends Last-Event-ID and resumes).
RECONNECT_MILLISECONDS = 2000
EVENTS_PER_READ = 500


def event_to_dict(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "job_id": str(event.job_id),
        "type": event.type,
        "stage": event.stage,
        "data": event.data,
        "created_at": event.created_at.isoformat(),
    }


def format_sse(event_id: int, event_type: str, data: dict[str, Any]) -> str:
    """One SSE message; the data is one line of JSON, so no line of it can end the message."""
    return f"id: {event_id}\nevent: {event_type}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def events_after(
    session: Session, job_id: uuid.UUID, after: int, *, limit: int = EVENTS_PER_READ
) -> list[JobEvent]:
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.id > after)
            .order_by(JobEvent.id)
            .limit(limit)
        ).all()
    )


def parse_last_event_id(value: str | None) -> int:
    """Where a reconnecting client left off (0, the beginning, for anything unusable)."""
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def stream_job_events(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    after: int,
    *,
    poll_seconds: float = 0.5,
    keepalive_seconds: float = 15.0,
    max_seconds: float = 600.0,
) -> Iterator[str]:
    """Every event after `after`, then new ones as they are written, until the job has ended
    and its last event was sent. A stream also closes after `max_seconds` (the client
    reconnects with Last-Event-ID), so a stuck job never pins a server thread for good.

    Each poll reads the job's status before its events: the terminal event is committed with
    the status, so once the status says ended, that poll's events include the last one."""
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
    started = last_sent = time.monotonic()
    while True:
        with sessions() as session:
            status = session.scalar(select(Job.status).where(Job.id == job_id))
            events = events_after(session, job_id, after)
            messages = [format_sse(event.id, event.type, event_to_dict(event)) for event in events]
        if messages:
            after = events[-1].id
            last_sent = time.monotonic()
            yield from messages
            if len(events) == EVENTS_PER_READ:
                continue  # more are waiting: read on at once
        if status is None or status in ENDED:
            return
        now = time.monotonic()
        if now - started > max_seconds:
            return
        if now - last_sent > keepalive_seconds:
            # A comment line keeps proxies from closing an idle connection.
            last_sent = now
            yield ": keepalive\n\n"
        time.sleep(poll_seconds)
