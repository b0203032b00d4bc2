"""Progress streams held open, for the starvation test and bench/streams.py: jobs that stay
running without any worker, and raw sockets that keep an event stream open on them."""

from __future__ import annotations

import socket
import uuid
from datetime import timedelta

from sqlalchemy import func, update
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobStage
from services.jobs import create_job


def parked_jobs(sessions: sessionmaker[Session], owner: uuid.UUID, count: int) -> list[uuid.UUID]:
    """Jobs whose fetch runs under a live lease of a worker that does not exist: nothing claims
    or sweeps them, so they stay running and their streams stay open, quiet."""
    ids = []
    with sessions.begin() as session:
        for _ in range(count):
            job = create_job(
                session, owner_id=owner, source={"url": "http://127.0.0.1:9/x.mp4"}, options={}
            ).job
            session.execute(update(Job).where(Job.id == job.id).values(status="running"))
            session.execute(
                update(JobStage)
                .where(JobStage.job_id == job.id, JobStage.name == "fetch")
                .values(
                    status="running", attempts=1, worker="absent", lease_until=func.now() + timedelta(hours=2)
                )
            )
            ids.append(job.id)
    return ids


def open_stream(base: str, key: str, job_id: uuid.UUID) -> socket.socket:
    """GET /jobs/<id>/events on a socket of its own, left open; the caller reads or closes it."""
    host, port = base.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=30)
    head = f"GET /api/v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n"
    conn.sendall(head.encode())
    return conn
