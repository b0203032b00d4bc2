"""Signing secrets: an endpoint's own, and each tenant's for its jobs' `webhook_url`.

A secret is never stored: its row holds a random salt, and the secret is derived from the
salt and CONVEYOR_SECRET_KEY, so a copy of the database alone signs nothing. Rotating keeps
the previous secret signing for SECRET_OVERLAP beside the new one (the header carries both
signatures), so receivers can switch without losing a delivery."""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models import WebhookSecret
from services.derived_keys import derived_key

SECRET_OVERLAP = timedelta(hours=24)
SECRET_PREFIX = "whsec_"


def secret_from_salt(secret_key: str | None, salt: str) -> str:
    """The Standard Webhooks secret (whsec_ and base64 of 32 bytes) a salt stands for."""
    return SECRET_PREFIX + base64.b64encode(derived_key(secret_key, f"webhook-secret.{salt}")).decode()


def _scope(owner_id: uuid.UUID, endpoint_id: uuid.UUID | None) -> list[ColumnElement[bool]]:
    endpoint = (
        WebhookSecret.endpoint_id.is_(None)
        if endpoint_id is None
        else WebhookSecret.endpoint_id == endpoint_id
    )
    return [WebhookSecret.owner_id == owner_id, endpoint]


def add_secret(session: Session, owner_id: uuid.UUID, endpoint_id: uuid.UUID | None) -> WebhookSecret:
    row = WebhookSecret(owner_id=owner_id, endpoint_id=endpoint_id, salt=secrets.token_hex(16))
    session.add(row)
    session.flush()
    return row


def live_salts(session: Session, owner_id: uuid.UUID, endpoint_id: uuid.UUID | None) -> list[str]:
    """The salts of every secret that signs now, the current one first."""
    rows = session.scalars(
        select(WebhookSecret.salt)
        .where(
            *_scope(owner_id, endpoint_id),
            or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > func.now()),
        )
        .order_by(WebhookSecret.expires_at.desc().nulls_first(), WebhookSecret.id.desc())
    )
    return list(rows)


def tenant_salts(session: Session, owner_id: uuid.UUID) -> list[str]:
    """The salts of a tenant's job-webhook secrets, creating its first one when it has none
    (a unique index makes two processes creating it at once end with one)."""
    salts = live_salts(session, owner_id, None)
    if salts:
        return salts
    session.execute(
        insert(WebhookSecret)
        .values(owner_id=owner_id, endpoint_id=None, salt=secrets.token_hex(16))
        .on_conflict_do_nothing(
            index_elements=["owner_id"],
            index_where=WebhookSecret.endpoint_id.is_(None) & WebhookSecret.expires_at.is_(None),
        )
    )
    return live_salts(session, owner_id, None)


def rotate_secret(
    session: Session, owner_id: uuid.UUID, endpoint_id: uuid.UUID | None
) -> tuple[WebhookSecret, datetime | None]:
    """A new current secret; the ones that signed until now keep signing for SECRET_OVERLAP
    (those already expiring sooner keep their own end). Returns it and when the old ones stop."""
    ends = session.scalar(select(func.now() + SECRET_OVERLAP))
    session.execute(
        update(WebhookSecret)
        .where(*_scope(owner_id, endpoint_id), WebhookSecret.expires_at.is_(None))
        .values(expires_at=ends)
    )
    return add_secret(session, owner_id, endpoint_id), ends
