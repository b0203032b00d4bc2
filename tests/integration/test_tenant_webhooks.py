"""Webhooks per tenant against real receivers: each tenant's endpoint gets its own jobs'
events signed with its own secret (verified with the Standard Webhooks library, and refused
with the other tenant's), a job's own webhook_url is signed with a secret of its tenant,
rotation signs with both secrets, retries come from PostgreSQL on the configured schedule
(the suite's is 7 x 0.2 s) well past the six attempts the old notify stage made, permanent
refusals are not retried, and attempts are listed and redeliverable."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook, WebhookVerificationError

from models import WebhookMessage
from services.config import get_settings
from services.webhooks.attempts import attempt_delivery
from services.webhooks.messages import redeliver_messages
from tests.fixtures import ApiClient, WebhookReceiver, WorkerProcess, make_key, wait_until

pytestmark = pytest.mark.integration

# Nothing listens on the discard port: the job fails in fetch within a second.
FAILING_SOURCE = {"url": "http://127.0.0.1:9/clip.mp4"}


@pytest.fixture
def tenant_a(api_url: str, sessions: sessionmaker[Session]) -> ApiClient:
    return ApiClient(api_url, make_key(sessions, "webhooks-a"))


@pytest.fixture
def tenant_b(api_url: str, sessions: sessionmaker[Session]) -> ApiClient:
    return ApiClient(api_url, make_key(sessions, "webhooks-b"))


def register(tenant: ApiClient, url: str, **extra: Any) -> dict[str, Any]:
    answer = tenant.post("/api/v1/webhook-endpoints", json={"url": url, **extra})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    assert body["secret"].startswith("whsec_")
    return body


def failed_job(tenant: ApiClient, **options: Any) -> str:
    answer = tenant.post("/api/v1/jobs", json={"source": FAILING_SOURCE, "options": options})
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    assert tenant.wait_for_job(job_id)["status"] == "failed"
    return job_id


def verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def messages(tenant: ApiClient, job_id: str) -> list[dict[str, Any]]:
    answer = tenant.get(f"/api/v1/jobs/{job_id}/webhooks")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["messages"]
    return found


def settled(tenant: ApiClient, job_id: str, count: int = 1) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        found = messages(tenant, job_id)
        ended = len(found) == count and all(m["status"] in ("delivered", "failed") for m in found)
        return found if ended else None

    result: list[dict[str, Any]] = wait_until(
        done, timeout=60, interval=0.2, what="webhook messages to settle"
    )
    return result


def test_each_tenant_gets_its_own_events_signed_with_its_own_secret(
    tenant_a: ApiClient,
    tenant_b: ApiClient,
    workers: WorkerProcess,
    webhook_receiver: WebhookReceiver,
    second_webhook_receiver: WebhookReceiver,
) -> None:
    receiver_b = second_webhook_receiver
    endpoint_a = register(tenant_a, webhook_receiver.url)
    endpoint_b = register(tenant_b, receiver_b.url, events=["job.failed"])
    assert endpoint_a["secret"] != endpoint_b["secret"]
    listed = tenant_a.get("/api/v1/webhook-endpoints").json()["endpoints"]
    assert [e["id"] for e in listed] == [endpoint_a["id"]] and "secret" not in listed[0]

    job_a, job_b = failed_job(tenant_a), failed_job(tenant_b)
    settled(tenant_a, job_a), settled(tenant_b, job_b)
    [(headers_a, body_a)] = webhook_receiver.received
    [(headers_b, body_b)] = receiver_b.received
    assert Webhook(endpoint_a["secret"]).verify(body_a, headers_a)["data"]["id"] == job_a
    assert Webhook(endpoint_b["secret"]).verify(body_b, headers_b)["data"]["id"] == job_b
    # Neither tenant's secret makes a signature the other's receiver accepts.
    assert not verifies(endpoint_b["secret"], headers_a, body_a)
    assert not verifies(endpoint_a["secret"], headers_b, body_b)
    forged = Webhook(endpoint_b["secret"]).sign(
        msg_id=headers_a["webhook-id"], timestamp=_stamp(headers_a), data=body_a.decode()
    )
    assert not verifies(endpoint_a["secret"], headers_a | {"webhook-signature": forged}, body_a)
    # Another tenant's job's attempts are not yours to see.
    assert tenant_b.get(f"/api/v1/jobs/{job_a}/webhooks").status_code == 404


def _stamp(headers: dict[str, str]) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)


def test_a_jobs_webhook_url_is_signed_with_a_secret_of_its_tenant(
    tenant_a: ApiClient, tenant_b: ApiClient, workers: WorkerProcess, webhook_receiver: WebhookReceiver
) -> None:
    secret_a = tenant_a.get("/api/v1/webhook-secret").json()["secret"]
    secret_b = tenant_b.get("/api/v1/webhook-secret").json()["secret"]
    assert secret_a != secret_b and secret_a == tenant_a.get("/api/v1/webhook-secret").json()["secret"]
    job_id = failed_job(tenant_a, webhook_url=webhook_receiver.url)
    [message] = settled(tenant_a, job_id)
    assert message["status"] == "delivered" and message["endpoint_id"] is None
    [(headers, body)] = webhook_receiver.received
    assert Webhook(secret_a).verify(body, headers)["type"] == "job.failed"
    assert not verifies(secret_b, headers, body)


def test_rotation_signs_with_the_old_and_the_new_secret(
    tenant_a: ApiClient, workers: WorkerProcess, webhook_receiver: WebhookReceiver
) -> None:
    endpoint = register(tenant_a, webhook_receiver.url)
    rotated = tenant_a.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate").json()
    assert rotated["secret"] != endpoint["secret"] and rotated["previous_secret_expires_at"]
    job_id = failed_job(tenant_a)
    settled(tenant_a, job_id)
    [(headers, body)] = webhook_receiver.received
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verifies(endpoint["secret"], headers, body) and verifies(rotated["secret"], headers, body)


def test_a_receiver_down_longer_than_six_attempts_still_gets_the_event(
    tenant_a: ApiClient, workers: WorkerProcess, webhook_receiver: WebhookReceiver
) -> None:
    """Seven failures, then up: the eighth attempt (the schedule's last retry) delivers; the
    notify stage made six attempts at most before, so this event would have been lost."""
    schedule = get_settings().webhook_retry_schedule
    webhook_receiver.statuses = [503] * len(schedule)
    endpoint = register(tenant_a, webhook_receiver.url)
    job_id = failed_job(tenant_a)
    [message] = settled(tenant_a, job_id)
    assert message["status"] == "delivered", message
    assert [a["status_code"] for a in message["attempts"]] == [503] * len(schedule) + [200]
    assert len({headers["webhook-id"] for headers, _ in webhook_receiver.received}) == 1
    headers, body = webhook_receiver.received[-1]
    assert verifies(endpoint["secret"], headers, body)


def test_permanent_refusals_are_not_retried_and_can_be_redelivered(
    tenant_a: ApiClient, workers: WorkerProcess, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.statuses = [400]
    register(tenant_a, webhook_receiver.url)
    register(tenant_a, "http://10.255.255.1/hooks")  # private: the SSRF guard refuses it
    job_id = failed_job(tenant_a)
    refused, blocked = settled(tenant_a, job_id, count=2)
    assert refused["status"] == "failed" and [a["status_code"] for a in refused["attempts"]] == [400]
    assert blocked["status"] == "failed" and len(blocked["attempts"]) == 1
    assert blocked["attempts"][0]["error"].startswith("blocked_url: ")

    answer = tenant_a.post(f"/api/v1/jobs/{job_id}/webhooks/redeliver", json={"message_id": refused["id"]})
    assert answer.status_code == 202, answer.text
    again = wait_until(
        lambda: (
            next(m for m in messages(tenant_a, job_id) if m["id"] == refused["id"])["status"] == "delivered"
        ),
        timeout=30,
        what="the redelivery",
    )
    assert again
    assert len(webhook_receiver.received) == 2
    assert webhook_receiver.received[0][0]["webhook-id"] == webhook_receiver.received[1][0]["webhook-id"]


def test_concurrent_attempts_at_one_due_message_send_it_once(
    tenant_a: ApiClient,
    sessions: sessionmaker[Session],
    workers: WorkerProcess,
    webhook_receiver: WebhookReceiver,
) -> None:
    """Tasks racing for one due message (a redelivered Celery message, the sweep sending it
    again): the guarded claim lets one of them send."""
    register(tenant_a, webhook_receiver.url)
    job_id = failed_job(tenant_a)
    [message] = settled(tenant_a, job_id)
    assert len(webhook_receiver.received) == 1
    with sessions.begin() as session:
        assert redeliver_messages(session, uuid.UUID(job_id), message["id"]) == [message["id"]]
    outcomes: list[str] = []
    racers = [
        threading.Thread(
            target=lambda: outcomes.append(attempt_delivery(sessions, message["id"], get_settings()))
        )
        for _ in range(4)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    settled(tenant_a, job_id)
    assert len(webhook_receiver.received) == 2, outcomes
    assert outcomes.count("delivered") <= 1 and set(outcomes) <= {"delivered", "not_due"}
    with sessions.begin() as session:
        count = session.scalar(
            select(func.count()).select_from(WebhookMessage).where(WebhookMessage.job_id == job_id)
        )
    assert count == 1


def test_finding_due_messages_reads_the_due_ones_not_the_history(
    tenant_a: ApiClient, sessions: sessionmaker[Session]
) -> None:
    """The sweep's query walks the partial index of messages in flight: thousands of
    delivered ones cost it nothing."""
    job_id = tenant_a.post("/api/v1/jobs", json={"source": FAILING_SOURCE}).json()["id"]
    with sessions.begin() as session:
        session.execute(
            text(
                "INSERT INTO webhook_messages (job_id, owner_id, target, url, webhook_id, event_type,"
                " payload, status, attempts) SELECT CAST(:job AS uuid), owner_id, 'history:' || n,"
                " 'http://x', 'msg_' || n, 'job.failed', '{}', 'delivered', 1"
                " FROM jobs, generate_series(1, 5000) AS n WHERE id = :job"
            ),
            {"job": job_id},
        )
        session.execute(text("ANALYZE webhook_messages"))
        due = (
            select(WebhookMessage.id)
            .where(
                WebhookMessage.status.in_(("pending", "sending")),
                WebhookMessage.next_attempt_at <= func.now(),
            )
            .order_by(WebhookMessage.next_attempt_at)
            .limit(1000)
        )
        compiled = due.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        plan = session.execute(text(f"EXPLAIN (FORMAT JSON) {compiled}")).scalar_one()
    assert "ix_webhook_messages_due" in json.dumps(plan), plan
