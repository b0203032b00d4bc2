"""Webhook signing (pure) and delivery to real receivers on loopback that verify like a subscriber would."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from services.webhooks.sending import build_webhook_request, deliver_webhook
from tests.local_http import running

SECRET = "whsec_" + base64.b64encode(b"conveyor-test-secret-32-bytes!!!").decode()
LOOPBACK = ["127.0.0.0/8"]
PAYLOAD: dict[str, Any] = {"type": "job.succeeded", "data": {"job_id": "j-1", "renditions": [720, 360]}}


class Delivery:
    def __init__(self, path: str, headers: dict[str, str], body: bytes, verified: Any) -> None:
        self.path = path
        self.headers = headers
        self.body = body
        self.verified = verified


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: int, location: str = "") -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.answer = answer
        self.location = location
        self.deliveries: list[Delivery] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/hooks"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = dict(self.headers.items())
        try:
            verified: Any = Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError as exc:
            verified = exc
        self.server.deliveries.append(Delivery(self.path, headers, body, verified))
        status = self.server.answer if not isinstance(verified, Exception) else 400
        answer = b"receiver says no" if status >= 400 else b""
        self.send_response(status)
        if self.server.location:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@contextlib.contextmanager
def receiving(answer: int = 204, location: str = "") -> Iterator[Receiver]:
    with running(Receiver(answer, location)) as server:
        yield server


def deliver(url: str, msg_id: str = "msg_1", allow_cidrs: list[str] | None = None) -> Any:
    return deliver_webhook(
        url,
        PAYLOAD,
        secrets=[SECRET],
        msg_id=msg_id,
        allow_cidrs=LOOPBACK if allow_cidrs is None else allow_cidrs,
        timeout=5,
    )


def test_request_is_compact_sorted_json_with_standard_headers() -> None:
    stamp = datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    body, headers = build_webhook_request(
        {"b": 1, "a": [1, 2]}, secrets=[SECRET], msg_id="msg_x", timestamp=stamp
    )
    assert body == b'{"a":[1,2],"b":1}'
    assert headers["webhook-id"] == "msg_x"
    assert headers["webhook-timestamp"] == str(int(stamp.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Conveyor-Webhooks/1"


def test_signature_of_a_non_utc_timestamp_verifies() -> None:
    now_elsewhere = datetime.now(timezone(timedelta(hours=-7)))
    body, headers = build_webhook_request(PAYLOAD, secrets=[SECRET], msg_id="msg_tz", timestamp=now_elsewhere)
    assert headers["webhook-timestamp"] == str(int(now_elsewhere.timestamp()))
    assert Webhook(SECRET).verify(body, headers) == PAYLOAD


def test_naive_timestamp_is_rejected() -> None:
    with pytest.raises(ValueError):
        build_webhook_request(PAYLOAD, secrets=[SECRET], msg_id="m", timestamp=datetime(2025, 1, 1))


@pytest.mark.integration
def test_delivery_is_signed_and_verified_by_the_receiver() -> None:
    with receiving(204) as receiver:
        result = deliver(receiver.url, msg_id="msg_2f9")
    assert result.ok is True
    assert result.status_code == 204
    assert result.error is None
    assert result.duration_ms >= 0
    [delivery] = receiver.deliveries
    assert delivery.verified == PAYLOAD
    assert delivery.headers["webhook-id"] == "msg_2f9"
    assert json.loads(delivery.body) == PAYLOAD


@pytest.mark.integration
def test_receiver_error_is_reported_not_raised() -> None:
    with receiving(500) as receiver:
        result = deliver(receiver.url)
    assert result.ok is False
    assert result.status_code == 500
    assert result.error is not None
    assert "HTTP 500" in result.error
    assert "receiver says no" in result.error
    assert len(receiver.deliveries) == 1


@pytest.mark.integration
def test_refused_url_sends_nothing() -> None:
    with receiving(204) as receiver:
        result = deliver(receiver.url, allow_cidrs=[])
    assert result.ok is False
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("blocked_url: ")
    assert receiver.deliveries == []


@pytest.mark.integration
def test_redirect_is_not_followed_and_counts_as_failure() -> None:
    with receiving(204) as elsewhere, receiving(307, location=elsewhere.url) as receiver:
        result = deliver(receiver.url)
    assert result.ok is False
    assert result.error is not None
    assert result.error.startswith("too_many_redirects: ")
    assert len(receiver.deliveries) == 1
    assert elsewhere.deliveries == []


@pytest.mark.integration
def test_unreachable_receiver_is_reported_not_raised() -> None:
    with receiving(204) as receiver:
        closed_url = receiver.url
    result = deliver(closed_url)
    assert result.ok is False
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("fetch_failed: ")
