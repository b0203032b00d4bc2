"""Idempotency keys answer for a day; beat deletes the older ones every hour."""

from services.idempotency import expire_keys
from tasks import app
from tasks.runtime import session_factory


@app.task(name="maintenance.expire_idempotency_keys", acks_late=False, ignore_result=True)
def expire_idempotency_keys() -> int:
    with session_factory().begin() as session:
        return expire_keys(session)
