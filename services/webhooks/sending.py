"""One signed webhook POST (Standard Webhooks), sent through the SSRF guard."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook
from urllib3.exceptions import HTTPError

from services.errors import ConveyorError
from services.netguard import open_guarded

USER_AGENT = "Conveyor-Webhooks/1"
# Enough to quote a receiver's error; a receiver cannot make us download more.
MAX_RESPONSE_BYTES = 4096
QUOTED_RESPONSE_CHARS = 200


# Refusals that another attempt would meet again: the receiver said the request itself is wrong
# (4xx, except a timeout or a rate limit), or the guard refused the address.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
PERMANENT_ERROR_CODES = ("blocked_url", "endpoint_deleted")


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def retryable(self) -> bool:
        if self.ok:
            return False
        if self.status_code is not None and 400 <= self.status_code < 500:
            return self.status_code in RETRYABLE_CLIENT_ERRORS
        return not (self.error or "").startswith(tuple(f"{code}:" for code in PERMANENT_ERROR_CODES))


def build_webhook_request(
    payload: Mapping[str, Any], *, secrets: Sequence[str], msg_id: str, timestamp: datetime
) -> tuple[bytes, dict[str, str]]:
    """The exact body and headers of one delivery; retries reuse msg_id so receivers can dedupe.

    Each secret adds its signature to the one header, space-separated, as the spec allows: while
    a secret is being rotated, a receiver verifying with either the old or the new one accepts."""
    if not secrets:
        raise ValueError("a webhook needs at least one secret to sign with")
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    # The library stamps the timezone on rather than converting, so hand it UTC already.
    utc = timestamp.astimezone(UTC)
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    signature = " ".join(
        Webhook(secret).sign(msg_id=msg_id, timestamp=utc, data=body.decode()) for secret in secrets
    )
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(utc.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    return body, headers


def deliver_webhook(
    url: str,
    payload: Mapping[str, Any],
    *,
    secrets: Sequence[str],
    msg_id: str,
    allow_cidrs: Sequence[str],
    timeout: float,
) -> DeliveryResult:
    """POST one signed delivery; every network or HTTP failure comes back as ok=False, never raised."""
    body, headers = build_webhook_request(
        payload, secrets=secrets, msg_id=msg_id, timestamp=datetime.now(UTC)
    )
    started = time.monotonic()

    def result(ok: bool, status: int | None, error: str | None) -> DeliveryResult:
        return DeliveryResult(ok, status, error, round((time.monotonic() - started) * 1000))

    try:
        # A redirect would resend a signed body to an address the subscriber never registered.
        response = open_guarded(
            "POST",
            url,
            allow_cidrs=allow_cidrs,
            headers=headers,
            body=body,
            connect_timeout=timeout,
            read_timeout=timeout,
            max_redirects=0,
        )
    except ConveyorError as exc:
        return result(False, None, f"{exc.code}: {exc.message}")
    try:
        status = response.status
        try:
            excerpt = response.read(MAX_RESPONSE_BYTES, decode_content=True)
        except HTTPError as exc:
            if 200 <= status < 300:
                # The receiver accepted the delivery; a broken acknowledgement body does not undo that.
                return result(True, status, None)
            return result(False, status, f"HTTP {status} (response unreadable: {type(exc).__name__})")
    finally:
        with contextlib.suppress(HTTPError, OSError):
            response.close()
    if 200 <= status < 300:
        return result(True, status, None)
    quoted = excerpt.decode("utf-8", "replace").strip()[:QUOTED_RESPONSE_CHARS]
    return result(False, status, f"HTTP {status}: {quoted}" if quoted else f"HTTP {status}")
