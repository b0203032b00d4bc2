"""A stage's resume state: what its attempts hand on to the next one, whatever host runs it
(the Veo operation a generated source is waiting for). It lives on the stage's row
(job_stages.resume_state), so no attempt needs a file another host wrote.

Writes are guarded by the attempt that makes them, like every transition of the stage
contract: an attempt that is no longer the stage's current one (its lease was taken over)
changes nothing, and is told to stop.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models import JobStage
from services.errors import Canceled


def read_stage_state(session: Session, job_id: uuid.UUID, stage: str) -> dict[str, Any] | None:
    state: dict[str, Any] | None = session.scalar(
        select(JobStage.resume_state).where(JobStage.job_id == job_id, JobStage.name == stage)
    )
    return state


def record_stage_state(
    session: Session, job_id: uuid.UUID, stage: str, attempt: int, state: dict[str, Any] | None
) -> bool:
    """Store `state` (None clears it) if `attempt` is still the stage's running attempt."""
    written = session.execute(
        update(JobStage)
        .where(
            JobStage.job_id == job_id,
            JobStage.name == stage,
            JobStage.status == "running",
            JobStage.attempts == attempt,
        )
        .values(resume_state=state)
        .returning(JobStage.id)
    ).scalar_one_or_none()
    return written is not None


@dataclass(frozen=True)
class StageState:
    """One attempt's view of its stage's resume state, each read and write its own transaction."""

    sessions: sessionmaker[Session]
    job_id: uuid.UUID
    stage: str
    attempt: int

    def read(self) -> dict[str, Any] | None:
        with self.sessions() as session:
            return read_stage_state(session, self.job_id, self.stage)

    def write(self, state: dict[str, Any] | None) -> None:
        with self.sessions.begin() as session:
            ours = record_stage_state(session, self.job_id, self.stage, self.attempt, state)
        if not ours:
            raise Canceled(f"The {self.stage} stage's attempt {self.attempt} is no longer its current one.")
