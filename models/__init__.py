"""SQLAlchemy models and the session factory. Imports nothing of ours."""

from models.base import Base, make_engine, make_session_factory
from models.jobs import (
    JOB_STATUSES,
    STAGE_NAMES,
    STAGE_STATUSES,
    ApiKey,
    Job,
    JobEvent,
    JobStage,
    StageAttempt,
    WebhookDelivery,
)

__all__ = [
    "JOB_STATUSES",
    "STAGE_NAMES",
    "STAGE_STATUSES",
    "ApiKey",
    "Base",
    "Job",
    "JobEvent",
    "JobStage",
    "StageAttempt",
    "WebhookDelivery",
    "make_engine",
    "make_session_factory",
]
