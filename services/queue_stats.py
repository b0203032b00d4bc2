"""What PostgreSQL knows about the queues: stage throughput and durations, job totals, and
where a waiting job stands in line."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Float, and_, cast, extract, func, or_, select, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect

from models import JOB_STATUSES, STAGE_NAMES, Job, JobStage

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def stage_seconds() -> ColumnElement[float]:
    """Seconds one attempt of a stage took (its last attempt: claiming resets started_at)."""
    return cast(extract("epoch", JobStage.finished_at - JobStage.started_at), Float)


def _finished_within(window: timedelta) -> ColumnElement[bool]:
    return JobStage.finished_at > func.now() - window


@dataclass(frozen=True)
class StageStats:
    active: int
    completed_hour: int
    completed_day: int
    failed_hour: int
    failed_day: int
    mean_seconds: float | None
    p95_seconds: float | None


def stage_stats(session: Session) -> dict[str, StageStats]:
    """Per stage: running now, succeeded and failed in the last hour and day, and the mean
    and 95th percentile duration of the last day's successful attempts."""
    succeeded_day = and_(JobStage.status == "succeeded", _finished_within(DAY))
    rows = session.execute(
        select(
            JobStage.name,
            func.count().filter(JobStage.status == "running"),
            func.count().filter(JobStage.status == "succeeded", _finished_within(HOUR)),
            func.count().filter(succeeded_day),
            func.count().filter(JobStage.status == "failed", _finished_within(HOUR)),
            func.count().filter(JobStage.status == "failed", _finished_within(DAY)),
            func.avg(stage_seconds()).filter(succeeded_day),
            func.percentile_cont(0.95).within_group(stage_seconds()).filter(succeeded_day),
        )
        # Only rows that can count; finished ones older than a day are the bulk of the table.
        .where(or_(JobStage.status == "running", _finished_within(DAY)))
        .group_by(JobStage.name)
    ).all()
    found = {
        name: StageStats(
            active=active,
            completed_hour=done_hour,
            completed_day=done_day,
            failed_hour=failed_hour,
            failed_day=failed_day,
            mean_seconds=None if mean is None else round(float(mean), 3),
            p95_seconds=None if p95 is None else round(float(p95), 3),
        )
        for name, active, done_hour, done_day, failed_hour, failed_day, mean, p95 in rows
    }
    empty = StageStats(0, 0, 0, 0, 0, None, None)
    return {name: found.get(name, empty) for name in STAGE_NAMES}


def job_totals(session: Session) -> dict[str, int]:
    counts = {
        status: count
        for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status))
    }
    return {status: int(counts.get(status, 0)) for status in JOB_STATUSES}


@dataclass(frozen=True)
class Waiting:
    """Where a job's queued stage stands: 1 is next; the wait is None until the stage has
    finished at least once in the last day (nothing to estimate from)."""

    stage: str
    position: int
    estimated_wait_seconds: float | None


def estimate_wait(ahead: int, running: int, mean_seconds: float | None) -> float | None:
    """The stages ahead, plus those running, drained by as many slots as are busy now (at
    least one): a rough figure that needs no knowledge of each worker's concurrency."""
    if mean_seconds is None:
        return None
    return round(mean_seconds * (ahead + running) / max(1, running), 1)


PRIORITY_RANKS = {"high": 0, "normal": 1, "low": 2}


def priority_rank(priority: object) -> int:
    """0 for high, 1 for normal (or anything unknown), 2 for low: the order Redis serves them
    in. Each stage row keeps it as priority_rank; the broker's priority is derived from it."""
    return PRIORITY_RANKS.get(str(priority), 1)


class RecentMeans:
    """Mean stage durations over the last day, read at most every `ttl_seconds` per process:
    a wait estimate needs nothing fresher, and the aggregate reads a whole day of rows."""

    def __init__(self, ttl_seconds: float = 30.0) -> None:
        self.ttl_seconds = ttl_seconds
        self._read_at = -math.inf
        self._means: dict[str, float] = {}

    def get(self, session: Connection | Session, stage: str) -> float | None:
        now = time.monotonic()
        if now - self._read_at >= self.ttl_seconds:
            rows = session.execute(
                select(JobStage.name, func.avg(stage_seconds()))
                .where(JobStage.status == "succeeded", _finished_within(DAY))
                .group_by(JobStage.name)
            )
            self._means = {name: float(mean) for name, mean in rows}
            self._read_at = now
        return self._means.get(stage)


recent_means = RecentMeans()


def ready_ahead(stage: str, ahead: ColumnElement[bool]) -> ScalarSelect[int]:
    """Scalar subquery counting the stage's ready rows that match `ahead`, answered by the
    partial index ix_job_stages_line: it reads every row ahead, so it is kept off the hot path."""
    ready = and_(JobStage.status == "queued", JobStage.name == stage, JobStage.available_at <= func.now())
    return select(func.count()).select_from(JobStage).where(ready, ahead).correlate(None).scalar_subquery()


def running_now(stage: str) -> ScalarSelect[int]:
    """Scalar subquery counting the stage's running rows (as many as busy worker slots)."""
    running = JobStage.name == stage, JobStage.status == "running"
    return select(func.count()).select_from(JobStage).where(*running).correlate(None).scalar_subquery()


def waiting_from(stage: str, ahead: int, running: int, mean_seconds: float | None) -> Waiting:
    return Waiting(
        stage=stage,
        position=ahead + 1,
        estimated_wait_seconds=estimate_wait(ahead, running, mean_seconds),
    )


def waiting_position(session: Session, job: Job) -> Waiting | None:
    """The job's place in line for its queued stage; None when no stage of it is waiting."""
    mine = next((stage for stage in job.stages if stage.status == "queued"), None)
    if mine is None:
        return None
    # Redis serves higher priorities first, then (within one step) in order of arrival.
    earlier = or_(
        JobStage.priority_rank < mine.priority_rank,
        and_(
            JobStage.priority_rank == mine.priority_rank,
            tuple_(JobStage.available_at, JobStage.id) < tuple_(mine.available_at, mine.id),
        ),
    )
    ahead, running = session.execute(select(ready_ahead(mine.name, earlier), running_now(mine.name))).one()
    return waiting_from(mine.name, ahead, running, recent_means.get(session, mine.name))


def stats_to_dict(stats: StageStats) -> dict[str, Any]:
    return {
        "active": stats.active,
        "completed": {"hour": stats.completed_hour, "day": stats.completed_day},
        "failed": {"hour": stats.failed_hour, "day": stats.failed_day},
        "mean_seconds": stats.mean_seconds,
        "p95_seconds": stats.p95_seconds,
    }
