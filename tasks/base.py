"""The stage runner: every cross-cutting concern of a stage in one place.

A stage body receives a StageContext and returns its output dict. Around it the runner
claims the stage row, heartbeats, records success, classifies failures (retry with backoff,
or fail the job with a stable code), and stops the chain when the stage was not ours to run.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Task

from services.config import Settings, get_settings
from services.errors import Canceled, ConveyorError, StageTimeout
from services.jobs import get_job, job_to_dict
from services.logs import log_context
from services.stages import (
    Claim,
    claim_stage,
    complete_stage,
    fail_stage,
    mark_canceled,
    max_attempts_for,
    renew_lease,
    requeue_stage,
    stage_outputs,
)
from services.workspace import Workspace
from tasks import app
from tasks.pipeline import dispatch
from tasks.runtime import session_factory, workspace

log = logging.getLogger("conveyor.stage")

# How often progress may be written to the stage row.
PROGRESS_WRITE_SECONDS = 1.0


@dataclass
class StageContext:
    """What a stage body may know and do; it never touches the database itself."""

    job_id: uuid.UUID
    stage: str
    attempt: int
    max_attempts: int
    job: dict[str, Any]
    source: dict[str, Any]
    options: dict[str, Any]
    outputs: dict[str, dict[str, Any]]
    settings: Settings
    workspace: Workspace
    _progress: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def priority(self) -> str:
        return str(self.options.get("priority", "normal"))

    def progress(self, percent: float) -> None:
        self._progress = max(self._progress, min(100.0, percent))

    def current_progress(self) -> float:
        return self._progress

    def stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()


class Heartbeat(threading.Thread):
    """Renews the lease beside the work; sets the stop flag when the stage is lost or canceled."""

    def __init__(self, ctx: StageContext, claim: Claim) -> None:
        super().__init__(name=f"heartbeat-{ctx.stage}", daemon=True)
        self.ctx, self.claim = ctx, claim
        self.done = threading.Event()

    def run(self) -> None:
        settings = self.ctx.settings
        written, since_renewal = -1.0, 0.0
        while not self.done.wait(PROGRESS_WRITE_SECONDS):
            since_renewal += PROGRESS_WRITE_SECONDS
            current = self.ctx.current_progress()
            if current == written and since_renewal < settings.heartbeat_seconds:
                continue
            try:
                with session_factory().begin() as session:
                    ours = renew_lease(
                        session, self.claim, lease_seconds=settings.stage_lease_seconds, progress=current
                    )
            except Exception:
                # A database blip must not kill the work; the lease has time to spare.
                log.warning("heartbeat failed", exc_info=True)
                continue
            written, since_renewal = current, 0.0
            if not ours:
                log.info("stage lost its lease or the job was canceled; stopping")
                self.ctx.stop()
                return


StageBody = Callable[[StageContext], dict[str, Any]]


def worker_name(task: Task) -> str:
    return f"{task.request.hostname or socket.gethostname()}:{task.request.id}"


def backoff_seconds(first: float, attempt: int) -> float:
    """Exponential backoff with full jitter on the upper half, so retries spread out."""
    ceiling = first * 2 ** max(0, attempt - 1)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def run_stage(
    task: Task, stage: str, job_id_text: str, body: StageBody, *, max_attempts: int, first_backoff: float
) -> None:
    settings = get_settings()
    job_id = uuid.UUID(job_id_text)
    with log_context(job_id=job_id_text, stage=stage):
        with session_factory().begin() as session:
            claim = claim_stage(
                session,
                job_id,
                stage,
                worker=worker_name(task),
                lease_seconds=settings.stage_lease_seconds,
                max_attempts=max_attempts,
            )
            job = get_job(session, job_id) if claim else None
            if claim is None or job is None:
                log.info("stage not claimable (finished, running elsewhere, or job ended): nothing to do")
                task.request.chain = None
                return
            ctx = StageContext(
                job_id=job_id,
                stage=stage,
                attempt=claim.attempt,
                max_attempts=max_attempts,
                job=job_to_dict(job),
                source=job.source,
                options=job.options,
                outputs=stage_outputs(session, job_id),
                settings=settings,
                workspace=workspace(),
            )
        log.info("stage started", extra={"attempt": claim.attempt})
        heartbeat = Heartbeat(ctx, claim)
        heartbeat.start()
        try:
            output = body(ctx)
        except SoftTimeLimitExceeded:
            _fail(task, claim, StageTimeout(f"The {stage} stage ran past its time limit."), ctx.priority)
            return
        except ConveyorError as error:
            if isinstance(error, Canceled) or ctx.should_stop():
                _stop(task, claim, ctx.priority)
                return
            if error.transient and claim.attempt < max_attempts:
                _retry(task, claim, error, backoff_seconds(first_backoff, claim.attempt))
            _fail(task, claim, error, ctx.priority)
            return
        except Exception as exc:
            log.exception("stage crashed")
            error = ConveyorError(f"The {stage} stage failed unexpectedly: {exc}", transient=True)
            if claim.attempt < max_attempts:
                _retry(task, claim, error, backoff_seconds(first_backoff, claim.attempt))
            _fail(task, claim, error, ctx.priority)
            return
        finally:
            heartbeat.done.set()
            heartbeat.join()
        with session_factory().begin() as session:
            recorded = complete_stage(session, claim, output)
        if not recorded:
            log.warning("stage finished but its lease was taken meanwhile; output discarded")
            task.request.chain = None
            return
        log.info("stage succeeded", extra={"attempt": claim.attempt})


def _retry(task: Task, claim: Claim, error: ConveyorError, delay: float) -> NoReturn:
    log.warning(
        "transient failure; retrying", extra={"code": error.code, "error": error.message, "delay": delay}
    )
    with session_factory().begin() as session:
        requeue_stage(session, claim, error, delay_seconds=delay)
    raise task.retry(countdown=delay, max_retries=None)


def _fail(task: Task, claim: Claim, error: ConveyorError, priority: str) -> None:
    log.warning("stage failed", extra={"code": error.code, "error": error.message})
    with session_factory().begin() as session:
        failed = fail_stage(session, claim.job_id, claim.stage, error.code, error.message)
    task.request.chain = None
    if failed and claim.stage != "notify":
        dispatch(claim.job_id, "notify", priority)


def _stop(task: Task, claim: Claim, priority: str) -> None:
    task.request.chain = None
    with session_factory().begin() as session:
        canceled = mark_canceled(session, claim)
    log.info("stage stopped", extra={"canceled": canceled})
    if canceled:
        dispatch(claim.job_id, "notify", priority)


def stage_task(
    stage: str, *, backoff: Callable[[Settings], float] | None = None
) -> Callable[[StageBody], Task]:
    """Register a stage body as the Celery task `pipeline.<stage>` (job_id is its only argument)."""

    def register(body: StageBody) -> Task:
        def run(self: Task, job_id: str) -> None:
            settings = get_settings()
            run_stage(
                self,
                stage,
                job_id,
                body,
                max_attempts=max_attempts_for(stage, settings),
                first_backoff=backoff(settings) if backoff else settings.retry_backoff_seconds,
            )

        run.__name__ = run.__qualname__ = body.__name__
        run.__doc__ = body.__doc__
        soft, hard = get_settings().time_limits(stage)
        # Every stage is asked to stop at its soft limit (-> `timeout`) and killed at the hard one.
        task = app.task(
            name=f"pipeline.{stage}", bind=True, acks_late=True, soft_time_limit=soft, time_limit=hard
        )
        return task(run)  # type: ignore[no-any-return]

    return register
