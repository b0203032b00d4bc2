"""Keys derived from the deployment's one secret (CONVEYOR_SECRET_KEY), one per purpose, so
that no value stored in the database is a secret on its own and no purpose's key can stand
in for another's."""

from __future__ import annotations

import hashlib
import hmac

from services.errors import ConveyorError


class NotConfigured(ConveyorError):
    code = "not_configured"
    transient = True  # an operator sets the secret; what waited on it can then go on


def derived_key(secret_key: str | None, purpose: str) -> bytes:
    """HMAC-SHA256 of the purpose under the secret key: 32 bytes no other purpose shares."""
    if not secret_key:
        raise NotConfigured(
            "CONVEYOR_SECRET_KEY is not set: webhooks cannot be signed nor playback links made."
        )
    return hmac.new(secret_key.encode(), f"conveyor.{purpose}".encode(), hashlib.sha256).digest()
