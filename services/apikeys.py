"""API keys: random tokens shown once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update
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


def find_key(session: Session, key: str) -> Caller | None:
    """The caller a live key belongs to. Core, not the ORM: every request runs this, and an
    ApiKey object would cost more to build than the query costs to answer."""
    row = (
        session.connection()
        .execute(
            select(ApiKey.id, ApiKey.is_admin).where(
                ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
            )
        )
        .one_or_none()
    )
    return None if row is None else Caller(row.id, row.is_admin)


def revoke_key(session: Session, prefix: str) -> int:
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
