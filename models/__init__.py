"""SQLAlchemy models and the session factory. Imports nothing of ours."""

from models.base import Base, make_engine, make_session_factory
from models.jobs import (
    JOB_STATUSES,
    STAGE_NAMES,
    STAGE_STATUSES,
    ApiKey,
    Job,
    JobEvent,
    JobPart,
    JobStage,
    LeasedWork,
    StageAttempt,
    WebhookDelivery,
)
from models.tenancy import IdempotencyKey, MetricCount
from models.webhooks import MESSAGE_STATUSES, WebhookEndpoint, WebhookMessage, WebhookSecret

__all__ = [
    "JOB_STATUSES",
    "MESSAGE_STATUSES",
    "STAGE_NAMES",
    "STAGE_STATUSES",
    "ApiKey",
    "Base",
    "IdempotencyKey",
    "Job",
    "JobEvent",
    "JobPart",
    "JobStage",
    "LeasedWork",
    "MetricCount",
    "StageAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookMessage",
    "WebhookSecret",
    "make_engine",
    "make_session_factory",
]
