"""notify: deliver the signed webhook. A failed delivery never fails the job."""

from typing import Any

from services.errors import WebhookFailed
from services.notifications import outcome_event_id, record_delivery, webhook_event
from services.webhooks import deliver_webhook
from tasks.base import StageContext, stage_task
from tasks.runtime import session_factory


@stage_task("notify", backoff=lambda settings: settings.webhook_backoff_seconds)
def notify(ctx: StageContext) -> dict[str, Any]:
    url = ctx.options["webhook_url"]
    secret = ctx.settings.webhook_secret
    if not secret:
        return {"delivered": False, "error": "CONVEYOR_WEBHOOK_SECRET is not set; webhooks cannot be signed."}
    with session_factory().begin() as session:
        event_id = outcome_event_id(session, ctx.job_id)
    msg_id, event_type, payload = webhook_event(ctx.job, event_id)
    result = deliver_webhook(
        url,
        payload,
        secret=secret,
        msg_id=msg_id,
        allow_cidrs=ctx.settings.ssrf_allow_cidrs,
        timeout=ctx.settings.webhook_timeout_seconds,
    )
    with session_factory().begin() as session:
        record_delivery(
            session,
            job_id=ctx.job_id,
            msg_id=msg_id,
            event_type=event_type,
            url=url,
            attempt=ctx.attempt,
            result=result,
        )
    if not result.ok and ctx.tries < ctx.max_attempts:
        raise WebhookFailed(f"Webhook delivery failed: {result.error or result.status_code}")
    return {
        "delivered": result.ok,
        "webhook_id": msg_id,
        "status_code": result.status_code,
        "error": result.error,
    }
