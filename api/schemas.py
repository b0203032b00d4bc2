"""Request bodies, validated strictly: an unknown field is an error, never silently ignored."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from api.errors import ApiError
from services.media.ladder import LADDER, RateControl, VideoCodec

LADDER_NAMES = tuple(rung.name for rung in LADDER)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnalysisOptions(Strict):
    backend: Literal["local", "gemini"] | None = None
    prompt: str | None = Field(None, max_length=4000)


class JobOptions(Strict):
    renditions: list[str] | None = Field(None, min_length=1)
    segment_format: Literal["ts", "fmp4"] | None = None
    video_codecs: list[VideoCodec] | None = Field(
        None,
        min_length=1,
        description="Each codec gets the whole ladder; players pick the one they decode. "
        "hevc and av1 need fMP4 segments (the default when they are asked for).",
    )
    rate_control: RateControl | None = Field(
        None,
        description="bitrate (fixed rates, the default) or capped_crf (a quality target under each "
        "rung's ceiling).",
    )
    priority: Literal["high", "normal", "low"] | None = None
    webhook_url: str | None = Field(None, max_length=2048)
    analysis: AnalysisOptions | None = None

    @field_validator("renditions")
    @classmethod
    def _known_renditions(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [name for name in value if name not in LADDER_NAMES]
        if unknown:
            raise ValueError(f"unknown renditions {unknown}; choose from {list(LADDER_NAMES)}")
        return sorted(set(value), key=LADDER_NAMES.index)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http(s) URL")
        return value

    @field_validator("video_codecs")
    @classmethod
    def _each_codec_once(cls, value: list[VideoCodec] | None) -> list[VideoCodec] | None:
        return None if value is None else list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _codecs_fit_the_segments(self) -> JobOptions:
        newer = [codec for codec in self.video_codecs or () if codec != "h264"]
        if newer and self.segment_format == "ts":
            raise ValueError(
                f"video_codecs {newer} need segment_format fmp4: MPEG-TS segments of them do not "
                "play in Safari or hls.js"
            )
        if newer:
            self.segment_format = "fmp4"
        return self


class UrlSource(Strict):
    url: str = Field(max_length=4096)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("source.url must be an http(s) URL")
        return value


class S3Object(Strict):
    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024)


class S3Source(Strict):
    s3: S3Object


class Generation(Strict):
    prompt: str = Field(min_length=1, max_length=4000)
    model: str | None = Field(None, max_length=100)
    duration_seconds: int | None = Field(None, ge=1, le=60)


class GenerateSource(Strict):
    generate: Generation


Source = UrlSource | S3Source | GenerateSource
SOURCE_KINDS: dict[str, type[Strict]] = {"url": UrlSource, "s3": S3Source, "generate": GenerateSource}


class JobRequest(Strict):
    """POST /jobs; parse_job_request applies it, with an error code per part (source, options)."""

    source: Source
    options: JobOptions | None = None


Model = TypeVar("Model", bound=BaseModel)


def _describe(error: ValidationError, whole: str = "body") -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or whole
        message = "is not a known option" if item["type"] == "extra_forbidden" else item["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def parse_options(raw: Any) -> dict[str, Any]:
    try:
        return JobOptions.model_validate(raw or {}).model_dump(exclude_none=True)
    except ValidationError as error:
        raise ApiError("invalid_options", _describe(error, "options")) from error


def parse_job_request(raw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(source, options) from a POST /jobs body."""
    if not isinstance(raw, dict):
        raise ApiError("invalid_request", "The body must be a JSON object with 'source' and 'options'.")
    unknown = sorted(set(raw) - {"source", "options"})
    if unknown:
        raise ApiError("invalid_request", f"Unknown fields: {unknown}.")
    options = parse_options(raw.get("options"))
    raw_source = raw.get("source")
    kinds = sorted(set(raw_source) & set(SOURCE_KINDS)) if isinstance(raw_source, dict) else []
    if len(kinds) != 1:
        raise ApiError(
            "invalid_source", f"source must be an object with exactly one of {sorted(SOURCE_KINDS)}."
        )
    try:
        source = SOURCE_KINDS[kinds[0]].model_validate(raw_source)
    except ValidationError as error:
        raise ApiError("invalid_source", "source." + _describe(error)) from error
    return source.model_dump(exclude_none=True), options


def parse_model(model: type[Model], raw: Any) -> Model:
    """A query string or JSON body checked against its model; 400 invalid_request naming the field."""
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as error:
        raise ApiError("invalid_request", _describe(error)) from error


EventType = Literal["job.succeeded", "job.failed", "job.canceled"]


class EndpointRequest(Strict):
    """POST /webhook-endpoints."""

    url: str = Field(max_length=2048, description="Where the signed webhooks go (http or https).")
    events: list[EventType] | None = Field(
        None, min_length=1, description="Event types to send; all when omitted."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must be an http(s) URL")
        return value


class RedeliverRequest(Strict):
    """POST /jobs/<id>/webhooks/redeliver: one message, or (omitted) every message of the job."""

    message_id: int | None = Field(None, ge=1, le=2**62)
