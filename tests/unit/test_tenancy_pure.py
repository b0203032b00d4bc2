"""The pure decisions behind tenants' webhooks, entitlements and playback links."""

from __future__ import annotations

import uuid

import pytest
from standardwebhooks import Webhook

from services.entitlements import Entitlements, NotEntitled, bucket_granted
from services.idempotency import check_key, fingerprint
from services.playback import is_published_path, playback_token, resolve
from services.webhooks.messages import retry_delay
from services.webhooks.secrets import secret_from_salt
from services.webhooks.sending import DeliveryResult

SVIX = [5, 300, 1800, 7200, 18000, 36000, 36000]


def result(status: int | None, error: str | None = None) -> DeliveryResult:
    return DeliveryResult(
        ok=status is not None and 200 <= status < 300, status_code=status, error=error, duration_ms=1
    )


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (500, "HTTP 500", True),
        (503, "HTTP 503", True),
        (408, "HTTP 408", True),
        (429, "HTTP 429", True),
        (400, "HTTP 400", False),
        (404, "HTTP 404", False),
        (410, "HTTP 410", False),
        (None, "fetch_failed: connection refused", True),
        (None, "too_many_redirects: 307", True),
        (None, "blocked_url: 10.0.0.1 is private", False),
        (None, "endpoint_deleted: gone", False),
        (204, None, False),
    ],
)
def test_which_failures_are_retried(status: int | None, error: str | None, retryable: bool) -> None:
    assert result(status, error).retryable is retryable


def test_the_retry_schedule_is_followed_with_jitter_then_given_up() -> None:
    for failures, delay in enumerate(SVIX, start=1):
        seen = [retry_delay(SVIX, failures) for _ in range(200)]
        assert all(value is not None and 0.8 * delay <= value <= 1.2 * delay for value in seen)
        assert len(set(seen)) > 1  # jittered
    assert retry_delay(SVIX, len(SVIX) + 1) is None
    assert sum(SVIX) > 86400 * 0.9  # about a day, as Svix


def test_secrets_are_standard_webhooks_secrets_that_differ_per_salt_and_key() -> None:
    one = secret_from_salt("k" * 40, "salt-a")
    assert one.startswith("whsec_") and Webhook(one)  # the library accepts it
    assert one == secret_from_salt("k" * 40, "salt-a")
    assert one != secret_from_salt("k" * 40, "salt-b")
    assert one != secret_from_salt("j" * 40, "salt-a")


def test_entitlements_refuse_what_a_plain_key_may_not_ask_for() -> None:
    plain = Entitlements()
    plain.check_request({"url": "https://x"}, {"priority": "low"})
    for options, code in (
        ({"priority": "high"}, "priority_not_allowed"),
        ({"analysis": {"backend": "gemini"}}, "backend_not_allowed"),
    ):
        with pytest.raises(NotEntitled) as refused:
            plain.check_request({"url": "https://x"}, options)
        assert refused.value.code == code
    with pytest.raises(NotEntitled) as refused:
        plain.check_request({"s3": {"bucket": "ingest", "key": "a.mp4"}}, {})
    assert refused.value.code == "bucket_not_allowed"
    assert not plain.has_quotas and Entitlements(max_active_jobs=1).has_quotas


def test_bucket_grants_are_whole_buckets_or_key_prefixes() -> None:
    grants = ("whole", "shared/tenant-a/")
    assert bucket_granted(grants, "whole", "any/key.mp4")
    assert bucket_granted(grants, "shared", "tenant-a/x.mp4")
    assert not bucket_granted(grants, "shared", "tenant-b/x.mp4")
    assert not bucket_granted(grants, "wholesale", "x.mp4")


def test_idempotency_fingerprints_ignore_json_key_order_but_not_content() -> None:
    assert fingerprint("/jobs", {"a": 1, "b": [1, 2]}) == fingerprint("/jobs", {"b": [1, 2], "a": 1})
    assert fingerprint("/jobs", {"a": 1}) != fingerprint("/uploads", {"a": 1})
    assert fingerprint("/uploads", "f.mp4", b"x") != fingerprint("/uploads", "f.mp4", b"y")
    assert check_key("  retry-1 ") == "retry-1"
    for bad in ("", "   ", "x" * 256, "tab\there"):
        with pytest.raises(Exception, match="Idempotency-Key"):
            check_key(bad)


def test_playback_tokens_and_paths() -> None:
    job = uuid.uuid4()
    token = playback_token(b"k" * 32, job, 0)
    assert token == playback_token(b"k" * 32, job, 0) != playback_token(b"k" * 32, job, 1)
    assert token != playback_token(b"j" * 32, job, 0) and len(token) == 32
    assert is_published_path("720p/index.m3u8") and is_published_path("master.m3u8")
    for bad in ("", "../x", "a/../../b", "/abs", "a//b", "a\\b", "./x"):
        assert not is_published_path(bad), bad
    assert resolve("720p/index.m3u8", "seg_00001.ts") == "720p/seg_00001.ts"
    assert resolve("master.m3u8", "subtitles/en.m3u8") == "subtitles/en.m3u8"
