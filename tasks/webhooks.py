"""Webhook retries from PostgreSQL: beat's `maintenance.send_webhooks` sends each message
that is due as a `webhooks.deliver` task on the notify queue; the task claims the message
with a guarded UPDATE, so a duplicate task sends nothing."""

import logging

from services.config import get_settings
from services.webhooks.attempts import attempt_delivery
from services.webhooks.messages import take_due_messages
from tasks import app
from tasks.runtime import session_factory

log = logging.getLogger("conveyor.webhooks")

# At most this many messages per sweep; the rest are due at the next one.
DUE_PER_SWEEP = 1000
# A message sent to the queue is not sent again for this long (it may wait behind others).
DISPATCH_GRACE_SECONDS = 60.0


@app.task(name="webhooks.deliver", acks_late=True, ignore_result=True)
def deliver(message_id: int) -> str:
    outcome = attempt_delivery(session_factory(), message_id, get_settings())
    log.info("webhook attempt", extra={"message_id": message_id, "outcome": outcome})
    return outcome


@app.task(name="maintenance.send_webhooks", acks_late=False, ignore_result=True)
def send_webhooks() -> int:
    settings = get_settings()
    grace = max(DISPATCH_GRACE_SECONDS, 3 * settings.webhook_dispatch_seconds)
    with session_factory().begin() as session:
        due = take_due_messages(session, limit=DUE_PER_SWEEP, dispatch_grace_seconds=grace)
    for message_id in due:
        deliver.delay(message_id)
    return len(due)
