"""API keys: random tokens shown once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, update
from sqlalchemy.orm import Session

from models import ApiKey

KEY_PREFIX = "cvk_"


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast digest is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, *, admin: bool = False) -> tuple[ApiKey, str]:
    """A new key row and the key itself, which is never stored and cannot be shown again."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=key[:12], key_hash=hash_key(key), is_admin=admin)
    session.add(row)
    session.flush()
    return row, key


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id (owner of the jobs it submits) and whether it is an admin's."""

    id: uuid.UUID
    is_admin: bool


def find_key(connection: Connection, key: str) -> Caller | None:
    """The caller a live key belongs to. Core, not the ORM: an ApiKey object would cost more
    to build than the query costs to answer."""
    live = select(ApiKey.id, ApiKey.is_admin).where(
        ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
    )
    row = connection.execute(live).one_or_none()
    return None if row is None else Caller(row.id, row.is_admin)


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
