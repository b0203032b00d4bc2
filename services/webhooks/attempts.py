"""One delivery attempt of one message: claim it, sign it with its target's live secrets,
POST it, record what happened. Used by the notify stage (first attempts) and by the
`webhooks.deliver` task (retries and redeliveries)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.derived_keys import NotConfigured
from services.webhooks.messages import JOB_URL_TARGET, claim_message, record_attempt
from services.webhooks.secrets import live_salts, secret_from_salt, tenant_salts
from services.webhooks.sending import DeliveryResult, deliver_webhook

# How long past its timeouts an attempt may run before another may take the message over.
LEASE_MARGIN_SECONDS = 30.0


def attempt_delivery(sessions: sessionmaker[Session], message_id: int, settings: Settings) -> str:
    """What became of the message: delivered, pending (a retry is scheduled), failed, stale,
    or not_due (nothing was sent: not due, or another attempt runs)."""
    lease = 2 * settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS
    with sessions.begin() as session:
        claimed = claim_message(session, message_id, lease_seconds=lease)
        if claimed is None:
            return "not_due"
        if claimed.target == JOB_URL_TARGET:
            salts = tenant_salts(session, claimed.owner_id)
        elif claimed.endpoint_id is not None:
            salts = live_salts(session, claimed.owner_id, claimed.endpoint_id)
        else:
            salts = []
    try:
        secrets = [secret_from_salt(settings.secret_key, salt) for salt in salts]
    except NotConfigured as exc:
        result = DeliveryResult(False, None, f"{exc.code}: {exc.message}", 0)
    else:
        if secrets:
            result = deliver_webhook(
                claimed.url,
                claimed.payload,
                secrets=secrets,
                msg_id=claimed.webhook_id,
                allow_cidrs=settings.ssrf_allow_cidrs,
                timeout=settings.webhook_timeout_seconds,
            )
        else:
            result = DeliveryResult(False, None, "endpoint_deleted: the endpoint no longer exists", 0)
    with sessions.begin() as session:
        return record_attempt(session, claimed, result, settings.webhook_retry_schedule)
