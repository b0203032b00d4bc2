"""API keys: random tokens shown once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets

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


def find_key(session: Session, key: str) -> ApiKey | None:
    return session.scalars(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).one_or_none()


def revoke_key(session: Session, prefix: str) -> int:
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
