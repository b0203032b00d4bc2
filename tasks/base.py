"""The stage runner: every cross-cutting concern of a stage in one place.

A stage body receives a StageContext and returns its output dict. Around it the runner claims
the stage row, heartbeats (renewing the lease, watching for a cancel, fencing itself when the
lease cannot be renewed), records success, classifies failures (requeue with a delay kept in
PostgreSQL, or fail the job with a stable code), ends a canceled job, and sends the stage that
follows. The chain a message carries is never trusted to send it: what PostgreSQL decided is.
"""

from __future__ import annotations

import contextvars
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Task
from celery.exceptions import Reject
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from models import JobPart, JobStage
from services.config import Settings, get_settings
from services.contract import (
    Claim,
    ClaimOutcome,
    PartPlan,
    Transition,
    cancel_requested,
    claim_part,
    claim_stage,
    complete_stage,
    fail_stage,
    finish_cancel,
    max_attempts_for,
    record_stopped,
    renew_lease,
    requeue_stage,
    stage_outputs,
    start_parts,
)
from services.contract.records import TRANSCODE
from services.errors import ConveyorError, StageTimeout
from services.jobs import get_job, job_to_dict
from services.logs import log_context
from services.stopping import CANCELED, LEASE_EXPIRED, LOST, StopSignal
from services.workspace import Workspace
from tasks import app
from tasks.pipeline import dispatch_all, part_task_name
from tasks.runtime import session_factory, workspace

log = logging.getLogger("conveyor.stage")

# How often the heartbeat looks at the job: a cancel must stop a stage within 2 s, and
# stopping an ffmpeg child takes up to one of them.
HEARTBEAT_TICK_SECONDS = 0.5
# Progress is written to the stage row at most this often.
PROGRESS_WRITE_SECONDS = 1.0
# How long the runner waits for its heartbeat thread (blocked in a database call, at worst
# until the statement timeout) before it goes on without it.
HEARTBEAT_JOIN_SECONDS = 5.0


def fence_margin(lease_seconds: float) -> float:
    """How long before its lease runs out a stage that could not renew it stops on its own: the
    lease is counted from before the renewal was sent, and this covers stopping the work."""
    return max(1.0, 0.2 * lease_seconds)


@dataclass
class StageContext:
    """What a stage body may know and do; it never touches the database itself."""

    job_id: uuid.UUID
    stage: str
    attempt: int  # this attempt's fencing token: name its own folders and keys after it
    max_attempts: int
    job: dict[str, Any]
    source: dict[str, Any]
    options: dict[str, Any]
    outputs: dict[str, dict[str, Any]]
    settings: Settings
    workspace: Workspace
    tries: int = 1  # attempts used since the job was last retried, this one included
    # What the stage's earlier attempts left it (services.stage_state); for a part, the
    # transcode stage's plan.
    resume_state: dict[str, Any] | None = None
    part: PartPlan | None = None  # the part this attempt runs, for a part of a transcode
    parts: list[PartRow] = field(default_factory=list)  # the transcode stage's parts, so far
    time_limit: float | None = None  # seconds this attempt may run (a part's scale with it)
    stop_signal: StopSignal = field(default_factory=StopSignal)
    _progress: float = 0.0

    @property
    def priority(self) -> str:
        return str(self.options.get("priority", "normal"))

    def progress(self, percent: float) -> None:
        self._progress = max(self._progress, min(100.0, percent))

    def current_progress(self) -> float:
        return self._progress

    def stop(self, reason: str) -> None:
        self.stop_signal.set(reason)

    def should_stop(self) -> bool:
        return self.stop_signal()


@dataclass(frozen=True)
class PartRow:
    """A part of the transcode as its stage sees it."""

    index: int
    kind: str
    status: str
    output: dict[str, Any] | None


@dataclass(frozen=True)
class PlannedParts:
    """What a transcode stage's body returns instead of an output when its work is to be done in
    parts: the parts, and the plan every part and the stitch read (the stage's resume state)."""

    plans: list[PartPlan]
    resume_state: dict[str, Any]


class Heartbeat(threading.Thread):
    """Beside the work: renews the lease, writes progress, and sets the stop signal when the job
    is canceled, the stage was taken from this attempt, or the lease could not be renewed."""

    def __init__(self, ctx: StageContext, claim: Claim, claimed_at: float) -> None:
        super().__init__(name=f"heartbeat-{ctx.stage}", daemon=True)
        self.ctx, self.claim = ctx, claim
        # Its log lines carry the stage's job_id and stage, as the stage's own do.
        self.log_context = contextvars.copy_context()
        self.done = threading.Event()
        self.lease = float(ctx.settings.stage_lease_seconds)
        self.last_renewal = claimed_at
        ctx.stop_signal.extend(claimed_at + self.lease - fence_margin(self.lease))

    def run(self) -> None:
        self.log_context.run(self.beat)

    def beat(self) -> None:
        settings, signal = self.ctx.settings, self.ctx.stop_signal
        # The claim wrote progress 0; the first write is the first progress the body reports.
        written, last_write = 0.0, 0.0
        while not self.done.wait(HEARTBEAT_TICK_SECONDS):
            if signal():  # the lease ran out without a renewal: stop (self-fencing)
                return
            started = time.monotonic()
            progress = self.ctx.current_progress()
            renew = started - self.last_renewal >= settings.heartbeat_seconds or (
                progress != written and started - last_write >= PROGRESS_WRITE_SECONDS
            )
            try:
                with session_factory().begin() as session:
                    ours = not renew or renew_lease(
                        session, self.claim, lease_seconds=self.lease, progress=progress
                    )
                    canceled = ours and cancel_requested(session, self.claim.job_id)
            except Exception:
                log.warning("heartbeat failed; the stage stops before its lease runs out", exc_info=True)
                continue
            if not ours:
                log.info("the stage is no longer this attempt's; stopping")
                self.ctx.stop(LOST)
                return
            if renew:
                self.last_renewal, written, last_write = started, progress, started
                signal.extend(started + self.lease - fence_margin(self.lease))
            if canceled:
                log.info("the job was canceled; stopping")
                self.ctx.stop(CANCELED)
                return

    def finish(self) -> None:
        self.done.set()
        self.join(timeout=HEARTBEAT_JOIN_SECONDS)


StageBody = Callable[[StageContext], "dict[str, Any] | PlannedParts"]
Take = Callable[[Session, str], ClaimOutcome]


def worker_name(task: Task) -> str:
    return f"{task.request.hostname or socket.gethostname()}:{task.request.id}"


def backoff_seconds(first: float, attempt: int) -> float:
    """Exponential backoff with full jitter on the upper half, so retries spread out."""
    ceiling = first * 2 ** max(0, attempt - 1)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _parts_of(session: Session, job_id: uuid.UUID) -> list[PartRow]:
    rows = session.execute(
        select(JobPart.index, JobPart.kind, JobPart.status, JobPart.output)
        .where(JobPart.job_id == job_id)
        .order_by(JobPart.index)
    )
    return [PartRow(*row) for row in rows]


def _part_plan(session: Session, claim: Claim) -> tuple[PartPlan, dict[str, Any] | None]:
    """The claimed part, and the plan its transcode stage kept."""
    part = session.execute(
        select(JobPart).where(JobPart.job_id == claim.job_id, JobPart.index == claim.part)
    ).scalar_one()
    plan = session.scalar(
        select(JobStage.resume_state).where(JobStage.job_id == claim.job_id, JobStage.name == TRANSCODE)
    )
    return (
        PartPlan(
            part.index, part.kind, part.start_seconds, part.end_seconds, part.span_seconds, part.first_segment
        ),
        plan,
    )


# A database restart or fail-over lasts seconds: a claim or a transition that meets one is tried
# again for DATABASE_RETRY_SECONDS. A claim that still cannot be made gives its message back to
# the broker (acknowledged, it would be lost while its row says it was sent); a transition that
# cannot be recorded leaves its lease to run out, and the sweeper takes the stage over.
DATABASE_ERRORS = (OperationalError, InterfaceError)
T = TypeVar("T")


def with_database(step: Callable[[], T], what: str) -> T:
    """Run `step` (one transaction), again with growing pauses while the database is unreachable."""
    deadline = time.monotonic() + get_settings().database_retry_seconds
    pause = 0.5
    while True:
        try:
            return step()
        except DATABASE_ERRORS as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning(
                "database unreachable; trying again",
                extra={"step": what, "pause": pause, "error": str(exc).splitlines()[0]},
            )
            time.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(2 * pause, 5.0)


def _claim(task: Task, stage: str, take: Take) -> StageContext | None:
    try:
        return with_database(lambda: _take(task, stage, take), "claim")
    except DATABASE_ERRORS as exc:
        log.error("database unreachable; the message goes back to the broker", extra={"error": str(exc)})
        raise Reject(exc, requeue=True) from exc


def _take(task: Task, stage: str, take: Take) -> StageContext | None:
    settings = get_settings()
    with session_factory().begin() as session:
        outcome = take(session, worker_name(task))
        claim = outcome.claim
        job = get_job(session, claim.job_id) if claim is not None else None
        ctx = None
        if claim is not None and job is not None:
            ctx = StageContext(
                job_id=claim.job_id,
                stage=stage,
                attempt=claim.attempt,
                tries=claim.tries,
                max_attempts=max_attempts_for(stage, settings),
                job=job_to_dict(job),
                source=job.source,
                options=job.options,
                outputs=stage_outputs(session, claim.job_id),
                settings=settings,
                workspace=workspace(),
                time_limit=settings.time_limits(stage)[0],
            )
            if claim.part is not None:
                ctx.part, ctx.resume_state = _part_plan(session, claim)
                ctx.time_limit = settings.part_time_limits(ctx.part.span_seconds)[0]
            else:
                ctx.resume_state = next(s.resume_state for s in job.stages if s.name == stage)
                ctx.parts = _parts_of(session, claim.job_id) if stage == TRANSCODE else []
    dispatch_all(outcome.dispatches)
    if ctx is None:
        log.info("stage not claimable: nothing to do", extra={"reason": outcome.refused})
    return ctx


def _record(transition: Callable[[Any], Transition]) -> Transition:
    def step() -> Transition:
        with session_factory().begin() as session:
            return transition(session)

    done = with_database(step, "record")
    dispatch_all(done.dispatches)
    return done


def run_stage(task: Task, stage: str, take: Take, body: StageBody, *, first_backoff: float) -> None:
    """Claim (with `take`), run the body beside its heartbeat, and record how it ended."""
    # What follows this stage is sent from what PostgreSQL decides, logged as every send is;
    # the chain in the message would send it a second time, unlogged.
    task.request.chain = None
    claimed_at = time.monotonic()
    ctx = _claim(task, stage, take)
    if ctx is None:
        return
    part = None if ctx.part is None else ctx.part.index
    claim = Claim(ctx.job_id, stage, ctx.attempt, worker_name(task), ctx.tries, part=part)
    fields = {"job_id": str(ctx.job_id)} | ({} if part is None else {"part": str(part)})
    with log_context(**fields):
        log.info("stage started", extra={"attempt": claim.attempt})
        heartbeat = Heartbeat(ctx, claim, claimed_at)
        heartbeat.start()
        try:
            output = body(ctx)
        except Exception as exc:
            heartbeat.finish()
            _after_failure(claim, ctx, exc, ctx.max_attempts, first_backoff)
        else:
            heartbeat.finish()
            if isinstance(output, PlannedParts):
                _plan(claim, output)
            else:
                _complete(claim, output)
        finally:
            heartbeat.finish()  # also when a SystemExit or KeyboardInterrupt leaves the worker


def _after_failure(
    claim: Claim, ctx: StageContext, exc: Exception, max_attempts: int, first_backoff: float
) -> None:
    """A body that raised: timed out, stopped (whatever it raised on the way out), or failed."""
    if isinstance(exc, SoftTimeLimitExceeded):
        _fail(claim, StageTimeout(f"The {claim.stage} stage ran past its time limit."))
        return
    if ctx.should_stop():
        _stopped(claim, ctx)
        return
    if isinstance(exc, ConveyorError):
        error = exc
    else:
        log.exception("stage crashed")
        error = ConveyorError(f"The {claim.stage} stage failed unexpectedly: {exc}", transient=True)
    if error.transient and claim.tries < max_attempts:
        _requeue(claim, error, backoff_seconds(first_backoff, claim.tries))
    else:
        _fail(claim, error)


def _complete(claim: Claim, output: dict[str, Any]) -> None:
    done = _record(lambda session: complete_stage(session, claim, output))
    if done.canceled:
        log.info("the job was canceled while the stage ran; its output is not recorded")
    elif not done.applied:
        log.warning("stage finished but its lease was taken meanwhile; output discarded")
    else:
        log.info("stage succeeded", extra={"attempt": claim.attempt})


def _plan(claim: Claim, planned: PlannedParts) -> None:
    done = _record(lambda session: start_parts(session, claim, planned.plans, planned.resume_state))
    if done.canceled:
        log.info("the job was canceled while its parts were planned")
    elif not done.applied:
        log.warning("parts planned but the stage's lease was taken meanwhile; plan discarded")
    else:
        log.info("transcode in parts", extra={"parts": len(planned.plans)})


def _requeue(claim: Claim, error: ConveyorError, delay: float) -> None:
    log.warning(
        "transient failure; retrying", extra={"code": error.code, "error": error.message, "delay": delay}
    )
    _record(lambda session: requeue_stage(session, claim, error, delay_seconds=delay))


def _fail(claim: Claim, error: ConveyorError) -> None:
    log.warning("stage failed", extra={"code": error.code, "error": error.message})
    _record(lambda session: fail_stage(session, claim, error.code, error.message))


def _stopped(claim: Claim, ctx: StageContext) -> None:
    reason = ctx.stop_signal.reason or LOST
    if reason == CANCELED:
        done = _record(lambda session: finish_cancel(session, claim))
        log.info("stage stopped: job canceled", extra={"canceled": done.canceled})
        return
    with session_factory().begin() as session:
        record_stopped(session, claim, reason)
    if reason == LEASE_EXPIRED:
        log.warning("stage stopped: its lease could not be renewed in time")
    else:
        log.info("stage stopped: another attempt owns it")


def stage_task(stage: str) -> Callable[[StageBody], Task]:
    """Register a stage body as the Celery task `pipeline.<stage>` (job_id is its only argument)."""

    def register(body: StageBody) -> Task:
        def run(self: Task, job_id: str) -> None:
            settings = get_settings()

            def take(session: Session, worker: str) -> ClaimOutcome:
                return claim_stage(
                    session,
                    uuid.UUID(job_id),
                    stage,
                    worker=worker,
                    lease_seconds=settings.stage_lease_seconds,
                    max_attempts=max_attempts_for(stage, settings),
                )

            with log_context(job_id=job_id, stage=stage):
                run_stage(self, stage, take, body, first_backoff=settings.retry_backoff_seconds)

        run.__name__ = run.__qualname__ = body.__name__
        run.__doc__ = body.__doc__
        soft, hard = get_settings().time_limits(stage)
        # Every stage is asked to stop at its soft limit (-> `timeout`) and killed at the hard one.
        task = app.task(
            name=f"pipeline.{stage}", bind=True, acks_late=True, soft_time_limit=soft, time_limit=hard
        )
        return task(run)  # type: ignore[no-any-return]

    return register


def part_task(stage: str) -> Callable[[StageBody], Task]:
    """Register the body of one part of a stage as the Celery task `pipeline.<stage>_part`: its
    one argument is the part's row id; its time limits come with each message (the part's
    length scales them), these being those of a part of PART_SECONDS."""

    def register(body: StageBody) -> Task:
        def run(self: Task, part_id: str) -> None:
            settings = get_settings()

            def take(session: Session, worker: str) -> ClaimOutcome:
                return claim_part(
                    session,
                    int(part_id),
                    worker=worker,
                    lease_seconds=settings.stage_lease_seconds,
                    max_attempts=max_attempts_for(stage, settings),
                )

            with log_context(stage=stage):
                run_stage(self, stage, take, body, first_backoff=settings.retry_backoff_seconds)

        run.__name__ = run.__qualname__ = body.__name__
        run.__doc__ = body.__doc__
        settings = get_settings()
        soft, hard = settings.part_time_limits(settings.part_seconds)
        task = app.task(
            name=part_task_name(stage), bind=True, acks_late=True, soft_time_limit=soft, time_limit=hard
        )
        return task(run)  # type: ignore[no-any-return]

    return register
