"""A job's events as a Server-Sent Events stream, read from job_events until the job ends, and
the feed that wakes every open stream of a process when its job has news."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobEvent

log = logging.getLogger("conveyor.events")

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


@dataclass(eq=False)
class Watch:
    """One open stream's interest in a job: woken when an event after `after` exists."""

    job_id: uuid.UUID
    after: int
    woken: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float) -> bool:
        woke = self.woken.wait(timeout)
        self.woken.clear()
        return woke


class EventFeed:
    """Tells open streams when their job has new events, for every stream of one process at
    once: a single query every `poll_seconds` over the watched jobs (one index seek each on
    job_events (job_id, id)), and nothing at all while no stream is open. A stream costs no
    database work while its job is quiet, so hundreds of them cost what one does.

    Why not LISTEN/NOTIFY: a transaction that NOTIFYs takes a database-wide lock at commit,
    held until its commit is durable, so every submission and stage transition (they all
    write events) would commit one at a time."""

    def __init__(self, sessions: sessionmaker[Session], *, poll_seconds: float = 0.25) -> None:
        self.sessions = sessions
        self.poll_seconds = poll_seconds
        self._watches: set[Watch] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, job_id: uuid.UUID, after: int) -> Iterator[Watch]:
        watch = Watch(job_id, after)
        with self._changed:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="event-feed", daemon=True)
                self._thread.start()
            self._changed.notify()
        try:
            yield watch
        finally:
            with self._changed:
                self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._watches))
                watches = list(self._watches)
            try:
                self._wake(watches)
            except Exception:
                log.warning("event feed: reading new events failed", exc_info=True)
            time.sleep(self.poll_seconds)

    def _wake(self, watches: list[Watch]) -> None:
        floors: dict[uuid.UUID, int] = {}
        for watch in watches:
            floors[watch.job_id] = min(watch.after, floors.get(watch.job_id, watch.after))
        with self.sessions() as session:
            rows = session.execute(_NEWEST_AFTER, {"jobs": list(floors), "afters": list(floors.values())})
            latest: dict[uuid.UUID, int] = {job_id: newest for job_id, newest in rows}
        for watch in watches:
            if latest.get(watch.job_id, 0) > watch.after:
                watch.woken.set()


_NEWEST_AFTER = text(
    "SELECT watched.job_id, max(event.id) FROM unnest(CAST(:jobs AS uuid[]), CAST(:afters AS bigint[]))"
    " AS watched(job_id, after) JOIN job_events AS event"
    " ON event.job_id = watched.job_id AND event.id > watched.after GROUP BY watched.job_id"
)


def stream_job_events(
    sessions: sessionmaker[Session],
    feed: EventFeed,
    job_id: uuid.UUID,
    after: int,
    *,
    keepalive_seconds: float = 15.0,
    max_seconds: float = 600.0,
) -> Iterator[str]:
    """Every event after `after`, then new ones as they are written, until the job has ended
    and its last event was sent. Between reads the stream waits on the feed, holding no
    connection. A stream also closes after `max_seconds` (the client reconnects with
    Last-Event-ID), so a stuck job is not followed for ever.

    Each read takes the job's status before its events: the terminal event is committed with
    the status, so once the status says ended, that read's events include the last one."""
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
    started = time.monotonic()
    with feed.watch(job_id, after) as watch:
        while True:
            with sessions() as session:
                status = session.scalar(select(Job.status).where(Job.id == job_id))
                events = events_after(session, job_id, after)
                messages = [format_sse(event.id, event.type, event_to_dict(event)) for event in events]
            if messages:
                after = watch.after = events[-1].id
                yield from messages
                if len(events) == EVENTS_PER_READ:
                    continue  # more are waiting: read on at once
            if status is None or status in ENDED:
                return
            left = max_seconds - (time.monotonic() - started)
            if left <= 0:
                return
            if not watch.wait(min(keepalive_seconds, left)):
                # A comment line keeps proxies from closing an idle connection.
                yield ": keepalive\n\n"
