"""One typed settings object, read from the environment (and `.env`) once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import imageio_ffmpeg
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Rate:
    amount: int
    seconds: int


def parse_rate(text: str) -> Rate:
    """'120/minute', '2 per hour', '10/5 minutes'; ValueError for anything else."""
    match = _RATE.match(text)
    if match is None or int(match[1]) < 1:
        raise ValueError(f"{text!r} is not a rate like '120/minute' or '2 per hour'")
    return Rate(int(match[1]), int(match[2] or 1) * _UNIT_SECONDS[match[3].lower()])


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor",
        description="SQLAlchemy URL of the PostgreSQL database (source of truth).",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker and rate-limit store.")
    broker_visibility_timeout_seconds: int = Field(
        300,
        description="A message a worker took and never acknowledged goes back to its queue after this.",
    )
    database_connect_timeout_seconds: float = Field(
        5.0, description="Seconds the API and workers wait to connect to PostgreSQL."
    )
    database_statement_timeout_seconds: float = Field(
        30.0, description="Longest statement the API and workers run (0: no limit)."
    )
    database_retry_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a worker tries a claim or a transition again while PostgreSQL is unreachable "
        "(a restart, a fail-over); a claim that still fails gives its message back to the broker.",
    )

    workspace_url: str = Field(
        "s3://conveyor-work/work",
        description="Where stages hand outputs to each other: s3://BUCKET/PREFIX or file:///PATH (one host).",
    )
    workspace_s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint of an s3:// workspace; unset means S3_ENDPOINT_URL."
    )
    workspace_keep_failed_seconds: int = Field(
        86400, description="How long a failed job's workspace objects are kept for inspection."
    )
    workspace_clean_interval_seconds: float = Field(
        60.0, description="How often the retention task cleans the workspace."
    )
    workspace_abandoned_seconds: int = Field(
        86400,
        description="An upload never completed, or one whose job never came to be, is removed once this old.",
    )
    scratch_dir: Path | None = Field(
        None, description="Where each process makes its private scratch folder; unset means the temp folder."
    )

    s3_endpoint_url: str | None = Field(None, description="S3 endpoint; unset means AWS.")
    s3_region: str = Field("us-east-1", description="S3 region used for signing.")
    s3_bucket: str = Field("conveyor-media", description="Delivery bucket for HLS output.")
    s3_prefix: str = Field("hls", description="Key prefix for published jobs.")
    s3_public_base_url: str | None = Field(
        None, description="Public (CDN) base URL of the bucket; unset means presigned URLs."
    )
    s3_cors_origins: list[str] = Field(
        default_factory=lambda: ["*"], description="Web origins allowed to play from the bucket (JSON list)."
    )
    s3_presign_seconds: int = Field(7 * 86400, description="Lifetime of presigned playback URLs.")
    s3_multipart_threshold_bytes: int = Field(
        8 * 1024 * 1024, description="Multipart upload above this size."
    )

    max_upload_bytes: int = Field(5 * 1024**3, description="Largest accepted upload or fetched source.")
    fetch_connect_timeout: float = Field(10.0, description="Seconds to connect when fetching a URL.")
    fetch_read_timeout: float = Field(30.0, description="Seconds between bytes when fetching a URL.")
    ssrf_allow_cidrs: list[str] = Field(
        default_factory=list,
        description='Private networks server-side requests may reach (JSON list, e.g. ["127.0.0.0/8"]).',
    )

    max_duration_seconds: float = Field(6 * 3600, description="Longest accepted source (probe limit).")
    max_pixels: int = Field(
        8192 * 4320, description="Largest accepted picture, width x height (probe limit)."
    )
    max_streams: int = Field(16, description="Most streams accepted in one source (probe limit).")

    segment_seconds: int = Field(4, description="HLS segment length; keyframes are forced on it.")
    part_seconds: float = Field(
        60.0,
        gt=0,
        description="Length of one transcode part (whole segments); any video host takes any part.",
    )
    part_time_limit_factor: float = Field(
        20.0, gt=0, description="A part's soft time limit in seconds per second of its length."
    )
    part_min_time_limit: int = Field(
        600, gt=0, description="The least soft time limit of any part, in seconds."
    )
    storyboard_interval_seconds: float = Field(5.0, description="Seconds between storyboard thumbnails.")
    storyboard_tile_width: int = Field(160, description="Width of one storyboard thumbnail in pixels.")
    storyboard_columns: int = Field(10, description="Thumbnails per row of a storyboard sprite sheet.")
    ffmpeg_path: str = Field(
        default_factory=imageio_ffmpeg.get_ffmpeg_exe,
        description="The ffmpeg that encodes and measures quality (default: imageio-ffmpeg's static build).",
    )
    x264_preset: str = Field("veryfast", description="x264 preset for every H.264 rendition.")
    x265_preset: str = Field("veryfast", description="x265 preset for every HEVC rendition.")
    svtav1_preset: int = Field(10, ge=0, le=13, description="SVT-AV1 preset (0 slowest … 13 fastest).")
    quality_receipts: bool = Field(
        True, description="Measure each rendition's quality (VMAF on a sample) after the transcode."
    )
    ffmpeg_threads: int = Field(0, description="ffmpeg -threads (0 = ffmpeg decides).")
    ffmpeg_memory_limit_bytes: int = Field(4 * 1024**3, description="RLIMIT_AS for each ffmpeg child.")

    stage_lease_seconds: int = Field(
        60, description="A claimed stage belongs to its worker this long per heartbeat."
    )
    heartbeat_seconds: float = Field(5.0, description="How often a running stage renews its lease.")
    stage_max_attempts: int = Field(3, description="Attempts per stage before the job fails.")
    stage_soft_time_limit: int = Field(3300, description="Seconds before a stage is asked to stop.")
    stage_hard_time_limit: int = Field(3600, description="Seconds before a stage's worker process is killed.")
    stage_time_limits: dict[str, tuple[int, int]] = Field(
        default_factory=dict,
        description='Per-stage [soft, hard] seconds overriding those two, e.g. {"transcode": [7000, 7200]}.',
    )
    retry_backoff_seconds: float = Field(2.0, description="First retry delay for transient errors (doubles).")
    sweep_interval_seconds: float = Field(
        5.0, description="How often the sweeper recovers lost stages and sends retries that are due."
    )
    sweep_grace_seconds: float = Field(
        10.0,
        description="A queued stage not known to be in the broker this long after it was due is re-sent.",
    )
    shutdown_grace_seconds: float = Field(
        60.0, description="On SIGTERM a running stage may finish this long before it is released."
    )

    secret_key: str | None = Field(
        None,
        validation_alias="CONVEYOR_SECRET_KEY",
        description="The deployment's secret: webhook signing secrets and playback tokens derive from it.",
    )
    webhook_timeout_seconds: float = Field(10.0, description="Timeout of one webhook delivery.")
    webhook_retry_schedule: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        description="Seconds before each webhook retry (jittered); one attempt more than delays.",
    )
    webhook_dispatch_seconds: float = Field(
        5.0, description="How often beat sends the webhook deliveries that are due."
    )
    api_public_url: str = Field(
        "http://127.0.0.1:8000",
        description="The API's address as players and webhook receivers reach it (playback URLs).",
    )

    @field_validator("secret_key")
    @classmethod
    def _long_secret(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 32:
            raise ValueError("CONVEYOR_SECRET_KEY must be at least 32 characters of random text")
        return value

    google_api_key: str | None = Field(None, description="Gemini API key; enables the gemini analyzer.")
    gemini_model: str = Field("gemini-2.5-flash", description="Model used for video analysis.")
    gemini_base_url: str | None = Field(None, description="Override of Google's API base URL.")
    gemini_file_active_timeout_seconds: float = Field(
        300.0, description="How long an uploaded file may take to become ACTIVE."
    )
    google_cloud_project: str | None = Field(None, description="Vertex AI project for Veo generation.")
    google_cloud_location: str = Field("us-central1", description="Vertex AI location for Veo generation.")
    veo_model: str = Field("veo-3.0-generate-001", description="Default model for generated sources.")
    veo_poll_initial_seconds: float = Field(
        5.0, description="First wait between Veo operation polls (doubles)."
    )
    veo_deadline_seconds: float = Field(900.0, description="How long a Veo generation may take.")

    api_key_cache_seconds: float = Field(
        10.0,
        description="How long an API process trusts a key it found live; a revoked key may work that long.",
    )
    submit_rate_limit: str = Field(
        "120/minute", description="Job submissions allowed per API key, e.g. 120/minute or 5000 per day."
    )

    @field_validator("submit_rate_limit")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    log_level: str = Field("INFO", description="Log level for API, workers and beat.")

    vertex_base_url: str | None = Field(None, description="Override of the Vertex AI base URL (Veo).")
    google_access_token: str | None = Field(
        None,
        description="Fixed OAuth access token for Vertex AI; unset means Application Default Credentials.",
    )
    s3_source_buckets: list[str] = Field(
        default_factory=list,
        description='Buckets jobs may name as an S3 source (JSON list, e.g. ["ingest"]); empty refuses all.',
    )

    def time_limits(self, stage: str) -> tuple[int, int]:
        """(soft, hard) seconds for one stage."""
        return self.stage_time_limits.get(stage, (self.stage_soft_time_limit, self.stage_hard_time_limit))

    def part_time_limits(self, span_seconds: float) -> tuple[int, int]:
        """(soft, hard) seconds for one part of a transcode, `span_seconds` of the source long:
        no source within MAX_DURATION_SECONDS can reach a limit, since no part is longer than
        PART_SECONDS (the last one may run a little past its probed length)."""
        soft = max(self.part_min_time_limit, round(self.part_time_limit_factor * span_seconds))
        return soft, soft + max(60, soft // 10)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
