"""notify: turn the job's outcome into webhook messages (one per endpoint of its tenant
subscribed to the event, plus the job's own webhook_url) and make their first attempts.
Retries are not this stage's: the messages wait in PostgreSQL for tasks.webhooks. A failed
delivery never fails the job."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services.jobs import get_job, job_to_dict
from services.playback import PlaybackLinks
from services.webhooks.attempts import attempt_delivery
from services.webhooks.messages import create_messages, outcome_event_id
from tasks.base import StageContext, stage_task
from tasks.runtime import session_factory

# First attempts to several endpoints go out side by side: one slow receiver does not hold
# up the others.
FIRST_ATTEMPTS_AT_ONCE = 8


@stage_task("notify")
def notify(ctx: StageContext) -> dict[str, Any]:
    links = PlaybackLinks.from_settings(ctx.settings)
    with session_factory().begin() as session:
        job = get_job(session, ctx.job_id)
        if job is None:
            return {"messages": 0, "delivered": 0}
        message_ids = create_messages(
            session,
            job=job_to_dict(job, links),
            owner_id=job.owner_id,
            webhook_url=ctx.options.get("webhook_url"),
            event_id=outcome_event_id(session, ctx.job_id),
        )
    with ThreadPoolExecutor(max(1, min(FIRST_ATTEMPTS_AT_ONCE, len(message_ids)))) as pool:
        outcomes = list(
            pool.map(lambda id_: attempt_delivery(session_factory(), id_, ctx.settings), message_ids)
        )
    return {"messages": len(message_ids), "delivered": outcomes.count("delivered")}
