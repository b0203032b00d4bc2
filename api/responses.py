"""Response bodies and query strings as pydantic models: the OpenAPI document is generated from
them, and the views send what these models validate, so the two cannot drift apart."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from flask import Response, jsonify
from pydantic import BaseModel, ConfigDict, Field

# Spelled out (not built from models' tuples) so mypy and the schema see the values;
# tests/unit/test_api_schemas.py checks they match models.JOB_STATUSES and STAGE_STATUSES.
JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
EndedStatus = Literal["succeeded", "failed", "canceled"]
StageStatus = Literal["pending", "queued", "waiting", "running", "succeeded", "failed", "canceled", "skipped"]
QueueName = Literal["fetch", "video", "upload", "analyze", "notify"]


class Query(BaseModel):
    """A query string: unknown parameters are refused like unknown body fields."""

    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """A shape built by services (job_to_dict, build_result): fields added there pass through."""

    model_config = ConfigDict(extra="allow")


class ErrorDetail(BaseModel):
    code: str
    message: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


class PartOut(BaseModel):
    index: int
    kind: Literal["video", "sound"] = Field(description="A span of the video, or the sound (encoded once).")
    start_seconds: float
    end_seconds: float | None = Field(description="Null for the last part: it runs to the end of the stream.")
    status: StageStatus
    attempts: int
    worker: str | None = Field(description="The Celery node (`name@host`) that ran it last.")
    progress: float
    started_at: datetime | None
    finished_at: datetime | None


class StageOut(Open):
    name: str
    status: StageStatus
    attempts: int
    worker: str | None = Field(None, description="The Celery node (`name@host`) that ran it last.")
    progress: float
    parts: list[PartOut] | None = Field(
        None, description="The transcode's parts, once planned: spans of the video any video host may take."
    )
    started_at: datetime | None
    finished_at: datetime | None
    error: ErrorDetail | None


class JobOut(Open):
    id: uuid.UUID
    status: JobStatus
    stage: str | None = Field(description="The stage the job is at (the failed one for a failed job).")
    progress: float = Field(ge=0, le=100)
    stages: list[StageOut]
    source: dict[str, Any]
    options: dict[str, Any]
    result: dict[str, Any] | None
    error: ErrorDetail | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    position: int | None = Field(
        None, description="While a stage of the job waits in its queue: its place in line (1 is next)."
    )
    estimated_wait_seconds: float | None = Field(
        None, description="While waiting: a rough wait from the queue ahead and recent stage durations."
    )


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class JobListQuery(Query):
    status: JobStatus | None = None
    created_after: datetime | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, max_length=500)


class RenditionOut(Open):
    name: str
    codec: Literal["h264", "hevc", "av1"] | None = None
    width: int | None
    height: int | None
    fps: float | None
    bandwidth: int = Field(description="Declared peak bits/s, with the loudest audio rendition's.")
    average_bandwidth: int | None
    url: str
    quality: dict[str, Any] | None = Field(
        None,
        description="How close it looks to the source on a sample: metric vmaf (vmaf_mean, vmaf_p5: the "
        "5th percentile, model, frames, sample_seconds) or psnr_ssim (psnr_mean, psnr_p5, ssim_mean, …); "
        "null when not measured.",
    )


class AudioRenditionOut(Open):
    name: str
    language: str | None
    title: str
    default: bool
    bandwidth: int
    url: str


class SubtitleRenditionOut(Open):
    name: str
    language: str | None
    title: str
    default: bool
    forced: bool
    url: str = Field(description="The WebVTT file.")
    playlist_url: str


class JobResult(Open):
    playback_url: str | None
    dash_url: str | None = Field(None, description="DASH manifest, for fMP4 output.")
    renditions: list[RenditionOut]
    audio: list[AudioRenditionOut] = []
    subtitles: list[SubtitleRenditionOut] = []
    poster_url: str | None = None
    storyboard: Any = None
    captions: list[Any] = []
    analysis: dict[str, Any] | None


class JobEventOut(BaseModel):
    """One `data:` line of the event stream (the SSE `id:` is `id`, the SSE `event:` is `type`)."""

    id: int
    job_id: uuid.UUID
    type: str
    stage: str | None
    data: dict[str, Any]
    created_at: datetime


class UploadForm(BaseModel):
    file: bytes = Field(description="The video.")
    options: str | None = Field(None, description="The job's options as a JSON object (see JobOptions).")


class Check(BaseModel):
    ok: bool
    latency_ms: float
    error: str | None = None


class Status(BaseModel):
    status: str


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, Check]


class QueueHealth(BaseModel):
    healthy: bool
    checks: dict[str, Check] = Field(description="postgres and redis.")
    workers: dict[str, list[str]] = Field(description="Workers consuming each queue now.")
    paused: list[str]
    age_seconds: float | None = Field(description="How old this answer is (refreshed in the background).")


class Counts(BaseModel):
    hour: int
    day: int


class QueueStat(BaseModel):
    stage: str
    waiting: int | None = Field(description="Messages in the broker queue (null if Redis did not answer).")
    active: int
    completed: Counts
    failed: Counts
    mean_seconds: float | None
    p95_seconds: float | None
    workers: list[str]
    paused: bool


class QueueStats(BaseModel):
    queues: dict[str, QueueStat]
    jobs: dict[str, int]


class FailedJob(BaseModel):
    id: uuid.UUID
    owner_id: uuid.UUID
    stage: str | None
    error: ErrorDetail
    attempts: int
    created_at: datetime
    finished_at: datetime | None


class FailedPage(BaseModel):
    jobs: list[FailedJob]
    total: int
    limit: int
    offset: int


class FailedQuery(Query):
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=1_000_000)


class CleanRequest(Query):
    older_than_seconds: int = Field(ge=0, le=10 * 365 * 86400)
    status: EndedStatus
    limit: int = Field(100, ge=1, le=1000)
    delete_outputs: bool = Field(False, description="Also delete what was published to the delivery bucket.")


class CleanResult(BaseModel):
    deleted: int
    job_ids: list[uuid.UUID]
    outputs_deleted: int


class QueueRequest(Query):
    queue: QueueName


class QueueControl(BaseModel):
    queue: str
    paused: bool
    workers: list[str] = Field(description="The workers the command reached.")


class EndpointOut(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str] | None = Field(description="Event types sent here; null is every type.")
    created_at: datetime


class EndpointSecret(EndpointOut):
    secret: str = Field(description="The signing secret (whsec_…), shown only in this answer.")
    previous_secret_expires_at: datetime | None = Field(
        None, description="After a rotation: until when the previous secret still signs too."
    )


class EndpointList(BaseModel):
    endpoints: list[EndpointOut]


class TenantSecret(BaseModel):
    secret: str = Field(description="Signs the webhooks sent to your jobs' own webhook_url (whsec_…).")
    previous_secret_expires_at: datetime | None = Field(
        None, description="After a rotation: until when the previous secret still signs too."
    )


class WebhookAttemptOut(BaseModel):
    attempt: int
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int
    created_at: datetime


class WebhookMessageOut(BaseModel):
    id: int
    webhook_id: str = Field(description="The webhook-id header: the same for every attempt of this event.")
    event_type: str
    endpoint_id: uuid.UUID | None = Field(description="The endpoint; null for the job's own webhook_url.")
    url: str
    status: Literal["pending", "sending", "delivered", "failed"]
    attempts: list[WebhookAttemptOut]
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime


class WebhookMessages(BaseModel):
    messages: list[WebhookMessageOut]


def send(model: type[BaseModel], body: dict[str, Any], status: int = 200) -> Response:
    """Validate a body against its declared model on the way out: the schema is a promise."""
    response = jsonify(model.model_validate(body).model_dump(mode="json"))
    response.status_code = status
    return response
