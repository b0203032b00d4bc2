"""Idempotency-Key on submissions, with Stripe's semantics: the same key and the same request
within IDEMPOTENCY_WINDOW answer the job the first one made; the same key with another
request is refused (idempotency_mismatch); keys are per tenant.

The key is recorded in the statement that creates the job (services/jobs.py), so concurrent
duplicates race on the primary key: one creates the job, the others find it."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, select, tuple_
from sqlalchemy.orm import Session

from models import IdempotencyKey
from services.errors import ConveyorError

IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_KEY_CHARS = 255


class IdempotencyMismatch(ConveyorError):
    code = "idempotency_mismatch"


def check_key(value: str) -> str:
    key = value.strip()
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise ConveyorError(
            f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable characters.", code="invalid_request"
        )
    return key


def fingerprint(route: str, *parts: Any) -> str:
    """SHA-256 of the route and the request's content (JSON parts canonical: key order and
    spacing do not make two requests different; bytes parts as they are)."""
    digest = hashlib.sha256(route.encode())
    for part in parts:
        digest.update(b"\0")
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Recorded:
    job_id: uuid.UUID
    fingerprint: str
    expired: bool


def find_recorded(connection: Connection | Session, owner_id: uuid.UUID, key: str) -> Recorded | None:
    row = connection.execute(
        select(
            IdempotencyKey.job_id,
            IdempotencyKey.fingerprint,
            IdempotencyKey.created_at < func.now() - IDEMPOTENCY_WINDOW,
        ).where(IdempotencyKey.owner_id == owner_id, IdempotencyKey.key == key)
    ).one_or_none()
    return None if row is None else Recorded(*row)


def replayed_job(
    connection: Connection | Session, owner_id: uuid.UUID, key: str, request: str
) -> uuid.UUID | None:
    """The job a live record of this key made for this same request; None when there is no
    live record (an expired one is deleted, so the key can be used afresh)."""
    recorded = find_recorded(connection, owner_id, key)
    if recorded is None:
        return None
    if recorded.expired:
        connection.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.owner_id == owner_id,
                IdempotencyKey.key == key,
                IdempotencyKey.created_at < func.now() - IDEMPOTENCY_WINDOW,
            )
        )
        return None
    if recorded.fingerprint != request:
        raise IdempotencyMismatch(
            f"Idempotency-Key {key!r} was used within the last day for a different request;"
            " use a new key for a new request."
        )
    return recorded.job_id


def expire_keys(session: Session, *, limit: int = 10_000) -> int:
    """Delete records older than the window (at most `limit` per call)."""
    old = (
        select(IdempotencyKey.owner_id, IdempotencyKey.key)
        .where(IdempotencyKey.created_at < func.now() - IDEMPOTENCY_WINDOW)
        .limit(limit)
    )
    result = session.execute(
        delete(IdempotencyKey).where(tuple_(IdempotencyKey.owner_id, IdempotencyKey.key).in_(old))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
