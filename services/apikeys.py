"""API keys: random tokens shown once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Row, func, select, update
from sqlalchemy.orm import Session

from models import ApiKey
from services.entitlements import PRIORITIES, Entitlements

KEY_PREFIX = "cvk_"


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast digest is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def default_entitlements(*, admin: bool) -> Entitlements:
    """A plain key: normal and low priority, local analysis, no S3 source; an operator's key
    may also ask for high priority."""
    return Entitlements(priorities=PRIORITIES) if admin else Entitlements()


def _columns(entitlements: Entitlements) -> dict[str, object]:
    return {
        "priorities": list(entitlements.priorities),
        "source_buckets": list(entitlements.source_buckets),
        "analysis_backends": list(entitlements.analysis_backends),
        "max_active_jobs": entitlements.max_active_jobs,
        "max_source_bytes_per_day": entitlements.max_source_bytes_per_day,
    }


def entitlements_of(row: ApiKey | Row[*tuple[Any, ...]]) -> Entitlements:
    """The entitlements of a key, from its ORM object or a row of its entitlement columns."""
    return Entitlements(
        priorities=tuple(row.priorities),
        source_buckets=tuple(row.source_buckets),
        analysis_backends=tuple(row.analysis_backends),
        max_active_jobs=row.max_active_jobs,
        max_source_bytes_per_day=row.max_source_bytes_per_day,
    )


def create_key(
    session: Session, name: str, *, admin: bool = False, entitlements: Entitlements | None = None
) -> tuple[ApiKey, str]:
    """A new key row and the key itself, which is never stored and cannot be shown again."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    granted = entitlements or default_entitlements(admin=admin)
    row = ApiKey(name=name, prefix=key[:12], key_hash=hash_key(key), is_admin=admin, **_columns(granted))
    session.add(row)
    session.flush()
    return row, key


def set_entitlements(session: Session, prefix: str, change: dict[str, object]) -> list[ApiKey]:
    """Apply `change` (Entitlements field -> new value) to the live keys starting with prefix;
    the keys changed. API processes see it within API_KEY_CACHE_SECONDS."""
    rows = list(session.scalars(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))))
    for row in rows:
        current = _columns(entitlements_of(row))
        for column, value in {**current, **change}.items():
            setattr(row, column, value)
    session.flush()
    return rows


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id (owner of the jobs it submits), whether it is an admin's,
    and what its jobs may ask for."""

    id: uuid.UUID
    is_admin: bool
    entitlements: Entitlements = field(default_factory=Entitlements)


def find_key(connection: Connection, key: str) -> Caller | None:
    """The caller a live key belongs to. Core, not the ORM: an ApiKey object would cost more
    to build than the query costs to answer."""
    live = select(
        ApiKey.id,
        ApiKey.is_admin,
        ApiKey.priorities,
        ApiKey.source_buckets,
        ApiKey.analysis_backends,
        ApiKey.max_active_jobs,
        ApiKey.max_source_bytes_per_day,
    ).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    row = connection.execute(live).one_or_none()
    return None if row is None else Caller(row.id, row.is_admin, entitlements_of(row))


class RecentKeys:
    """Callers of keys found live in the last `ttl_seconds`, per process.

    Every API request authenticates, and the lookup was a fifth of a submission's cost. The
    price is that a revoked key keeps working for up to `ttl_seconds` in a process that saw
    it just before; 0 turns the cache off. Only live keys are kept, so the cache holds at
    most one entry per key an operator created, and an unknown key is always looked up.
    """

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._found: dict[str, tuple[Caller, float]] = {}

    def find(self, connect: Callable[[], Connection], key: str) -> Caller | None:
        """The key's caller, from the cache or else through a connection `connect` opens."""
        digest = hash_key(key)
        now = self.clock()
        cached = self._found.get(digest)
        if cached is not None and now < cached[1]:
            return cached[0]
        with connect() as connection:
            caller = find_key(connection, key)
        if caller is None:
            self._found.pop(digest, None)
        else:
            self._found[digest] = (caller, now + self.ttl_seconds)
        return caller


def revoke_key(session: Session, prefix: str) -> int:
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
