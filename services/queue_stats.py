"""What PostgreSQL knows about the queues: stage throughput and durations, job totals, and
where a waiting job stands in line."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Float, and_, case, cast, extract, func, or_, select, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models import JOB_STATUSES, STAGE_NAMES, Job, JobStage

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def stage_seconds() -> ColumnElement[float]:
    """Seconds one attempt of a stage took (its last attempt: claiming resets started_at)."""
    return cast(extract("epoch", JobStage.finished_at - JobStage.started_at), Float)


def priority_rank() -> ColumnElement[int]:
    """0 for high, 1 for normal (or none), 2 for low: the order Redis serves them in."""
    return case(
        (Job.options["priority"].astext == "high", 0),
        (Job.options["priority"].astext == "low", 2),
        else_=1,
    )


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


def waiting_position(session: Session, job: Job) -> Waiting | None:
    """The job's place in line for its queued stage; None when no stage of it is waiting."""
    mine = next((stage for stage in job.stages if stage.status == "queued"), None)
    if mine is None:
        return None
    my_rank = {"high": 0, "low": 2}.get(str(job.options.get("priority", "normal")), 1)
    ready = and_(
        JobStage.name == mine.name,
        JobStage.status == "queued",
        JobStage.available_at <= func.now(),
    )
    # Redis serves higher priorities first, then (within one step) in order of arrival.
    earlier = or_(
        priority_rank() < my_rank,
        and_(
            priority_rank() == my_rank,
            tuple_(JobStage.available_at, JobStage.id) < tuple_(mine.available_at, mine.id),
        ),
    )
    ahead = session.scalar(
        select(func.count()).select_from(JobStage).join(Job, Job.id == JobStage.job_id).where(ready, earlier)
    )
    running = session.scalar(
        select(func.count()).where(JobStage.name == mine.name, JobStage.status == "running")
    )
    mean = session.scalar(
        select(func.avg(stage_seconds())).where(
            JobStage.name == mine.name,
            JobStage.status == "succeeded",
            JobStage.finished_at > func.now() - DAY,
        )
    )
    ahead, running = int(ahead or 0), int(running or 0)
    return Waiting(
        stage=mine.name,
        position=ahead + 1,
        estimated_wait_seconds=estimate_wait(ahead, running, None if mean is None else float(mean)),
    )


def stats_to_dict(stats: StageStats) -> dict[str, Any]:
    return {
        "active": stats.active,
        "completed": {"hour": stats.completed_hour, "day": stats.completed_day},
        "failed": {"hour": stats.failed_hour, "day": stats.failed_day},
        "mean_seconds": stats.mean_seconds,
        "p95_seconds": stats.p95_seconds,
    }
